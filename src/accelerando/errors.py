"""Exceptions that the command line turns into a one-line message and exit code 2."""

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user. The message names the problem and the fix, on one line."""
