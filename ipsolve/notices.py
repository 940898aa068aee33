"""Python warnings that point at the user's own line: the first frame outside the ipsolve package
(``warnings.warn``'s ``skip_file_prefixes`` does this from Python 3.12; ipsolve supports 3.10)."""
from __future__ import annotations

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
