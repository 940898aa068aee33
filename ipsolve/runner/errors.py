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


def script_main(main, argv=None):
    """Run a study script's ``main`` with its plain mistakes — a missing file, a setting ipsolve
    refuses (:class:`RunError`) — as one ``<script>: error: …`` line and exit status 2, as argparse
    reports its own (they were tracebacks: an audit of the scripts, 2026-12-07).  Other errors keep
    their traceback: they are bugs to report."""
    import sys
    from pathlib import Path

    try:
        return main() if argv is None else main(argv)
    except (RunError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        text = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.filename else str(err)
        print(f"{Path(sys.argv[0]).name}: error: {text.splitlines()[0] if text else type(err).__name__}",
              file=sys.stderr)
        sys.exit(2)
