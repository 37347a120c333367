"""`python -m colora_cli ...` runs the colora command (also under torchrun)."""
from colora_cli.fastpath import run

if __name__ == "__main__":
    run()
