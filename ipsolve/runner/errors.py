"""The runner's error (a module of its own, so that every part of the runner can raise it)."""
from __future__ import annotations

from ..notices import shown


class RunError(ValueError):
    """A problem with the user's input or settings (printed without a traceback by the CLI).  A
    :class:`ValueError`, as the same problem given to ``ipsolve.solve`` raises: a caller of the API
    catches one type whichever door the input came through."""


def flag(name: str, value) -> bool:
    """A true/false setting, or one line naming it: Hydra reads ``no``, ``off``, ``yes`` as strings,
    which Python takes as true (``data.measurements=no`` read images as measurements)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise RunError(f"{name} must be true or false, got {shown(value)}")
