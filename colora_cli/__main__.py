"""`python -m colora ...` runs the colora command (also under torchrun)."""

from colora.cli.fastpath import run

if __name__ == "__main__":
    run()
