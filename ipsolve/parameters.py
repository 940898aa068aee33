"""The keyword parameters a registered class takes, and a one-line error for a misspelt one.

Solvers pass ``**kw`` up their class chain (``DMPlug → PlugSolver → Solver``), so
``inspect.signature`` of the leaf class alone does not list everything: walk the MRO.
"""
from __future__ import annotations

import difflib
import inspect


def accepted_parameters(cls) -> list[str]:
    """Every keyword ``cls(...)`` accepts, the leaf class's own first."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def unknown_parameters_message(kind: str, name: str, cls, given) -> str | None:
    """``None`` if every key of ``given`` is a parameter of ``cls``; else one line naming the
    first unknown key, the closest known one and the full list."""
    known = accepted_parameters(cls)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            return f"{kind} {name!r} has no parameter {key!r}{hint} Its parameters: {', '.join(known)}"
    return None
