"""Exceptions that the command line turns into a one-line message and exit code 2, and the check of an environment
variable that takes one of a few words."""

import os

__all__ = ["UserError", "env_choice"]


class UserError(Exception):
    """Bad input from the user. The message names the problem and the fix, on one line."""


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """The environment variable ``name`` as one of ``choices`` (case and surrounding spaces ignored; unset or empty:
    ``default``); ``UserError`` naming the value and the choices otherwise."""
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise UserError(f"{name}={value!r}; use {', '.join(choices[:-1])} or {choices[-1]}")
    return value
