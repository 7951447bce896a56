"""Command-line interface: `accelerando <command> ...`. Each subcommand lives in its own module."""
