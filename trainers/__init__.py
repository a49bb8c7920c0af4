"""Command-line entry points (`python -m trainers.<name>`)."""
