"""The keyword parameters a registered class takes, and a one-line error for a misspelt one.

Solvers pass ``**kw`` up their class chain (``DMPlug → PlugSolver → Solver``), so
``inspect.signature`` of the leaf class alone does not list everything: walk the MRO.
"""
from __future__ import annotations

import difflib
import inspect

from .notices import shown


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


def expected_types(cls) -> dict[str, set[str]]:
    """Per keyword of ``cls(...)``: the type names its annotation allows (``{"float", "None"}``
    for ``float | None``, and for ``float = None``), or the type of its default where it has no
    annotation."""
    types: dict[str, set[str]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name in types or p.name == "self" or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            if p.annotation is not p.empty:
                text = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
                types[p.name] = {part.strip() for part in str(text).split("|")} | ({"None"} if p.default is None else set())
            elif p.default is not p.empty and p.default is not None:
                types[p.name] = {type(p.default).__name__}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return types


def parameter_type_message(kind: str, name: str, cls, given: dict) -> str | None:
    """``None`` unless a numeric parameter of ``cls`` in ``given`` holds a string; then one line
    naming the parameter and what it takes (``solver.zeta=abc`` → "... 'zeta' must be a number",
    where the constructor would only say "could not convert string to float")."""
    types = expected_types(cls)
    for key, value in given.items():
        allowed = types.get(key)
        if allowed and "bool" in allowed and not allowed - {"bool", "None"} and not isinstance(value, (bool, type(None))):
            # rescale_zeta=no: a string is true in Python, so it switched the option ON
            return f"{kind} {name!r}: parameter {key!r} must be true or false, got {shown(value)}"
        scalar = {a for a in allowed or () if not a.startswith(("list", "tuple"))}
        if not scalar & {"int", "float"} or scalar - {"int", "float", "None", "bool"}:
            continue  # not a plain number parameter
        what = "an integer" if "float" not in scalar else "a number"
        if (isinstance(value, bool) and "bool" not in allowed) or (value is None and "None" not in allowed):
            # steps=null compared None with 1 deep in the constructor; zeta=true ran with ζ = 1
            return (f"{kind} {name!r}: parameter {key!r} must be {what}{' or null' if 'None' in allowed else ''}, "
                    f"got {shown(value)}")
        if isinstance(value, float) and "float" not in scalar:  # steps=2.5: a torch TypeError deep in the solve
            return f"{kind} {name!r}: parameter {key!r} must be an integer, got {shown(value)}"
        if isinstance(value, (list, tuple)) and scalar == allowed:  # steps=[1,2]; missing=[0.3,0.7] takes lists
            return f"{kind} {name!r}: parameter {key!r} must be {what}, got the list {list(value)!r}"
        if isinstance(value, (list, tuple)) and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in value):  # missing=[0.3,abc]
            return f"{kind} {name!r}: parameter {key!r} must be {what} or a list of numbers, got {shown(list(value))}"
        if isinstance(value, dict):  # steps={a:1}
            return f"{kind} {name!r}: parameter {key!r} must be {what}, got {shown(dict(value))}"
        if not isinstance(value, str):
            continue
        if value == "auto" and key in (getattr(cls, "search_space", None) or {}):
            continue  # chosen from the measurement (ipsolve.calibrate)
        return (f"{kind} {name!r}: parameter {key!r} must be {what}{' or null' if 'None' in allowed else ''}, "
                f"got {shown(value)}")
    return None


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
