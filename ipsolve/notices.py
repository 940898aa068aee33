"""What ipsolve tells the user, in one style: Python warnings that point at the user's own line (the
first frame outside the ipsolve package: ``warnings.warn``'s ``skip_file_prefixes`` does this from
Python 3.12; ipsolve supports 3.10), numbers without exponent notation, values as the user wrote them."""
from __future__ import annotations

import math
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn(message, category)`` attributed to the innermost caller outside ipsolve."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


def main_process() -> bool:
    """Whether this is the first process of a torchrun / accelerate launch (``RANK``), or the only
    one: what concerns the whole run is said by it alone (each process logs to its own file)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def bars_render() -> bool:
    """Whether a progress bar renders where it is written: a terminal or a notebook.  Elsewhere (a
    log file, a pipe) every redraw is another line — thousands per solve — so bars are left out
    there (the command line writes progress log lines instead)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def did_you_mean(value, choices) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``value`` (difflib), or ""."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def plain_number(value: float, digits: int = 3) -> str:
    """A score or score difference as a user reads it: ``digits`` significant digits, never exponent
    notation (1550 and 0.00005, not 1.55e+03 and 5e-05; σ = 0 scores are mean squared errors, not
    multiples of σ²).  Shared by the calibration's notes and warning and the run report, so all say
    the same figure."""
    text = f"{value:.{digits}g}"
    if "e" not in text or not math.isfinite(value):
        return text
    text = f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def plain_pair(a: float, b: float, digits: int = 3) -> tuple[str, str]:
    """``a`` and ``b`` as :func:`plain_number` gives them, with as many more digits (up to 8) as they need to
    read differently when they differ — "score 26.4 against 26.4" hid a change of 0.09 % (an audit, 2026-12-07)."""
    for d in range(digits, 9):
        ta, tb = plain_number(a, d), plain_number(b, d)
        if ta != tb or a == b:
            break
    return ta, tb


def shown(value) -> str:
    """A value as the user wrote it in a setting: ``true``/``false``/``null`` for Python's
    ``True``/``False``/``None`` (the spellings of Hydra's YAML and of the messages' "or null"),
    ``repr`` otherwise."""
    return {True: "true", False: "false"}.get(value, "null") if value is None or isinstance(value, bool) \
        else repr(value)
