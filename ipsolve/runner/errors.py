"""The runner's error (a module of its own, so that every part of the runner can raise it)."""
from __future__ import annotations


class RunError(Exception):
    """A problem with the user's input or settings (printed without a traceback by the CLI)."""
