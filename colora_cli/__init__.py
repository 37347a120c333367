"""The colora command line (Typer + Rich) and its use-case layer (colora_cli.api)."""

__version__ = "0.1.0"
