"""The command line (Typer + Rich): parsing, printing, progress. Commands call colora.api."""
