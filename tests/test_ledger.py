"""docs/fidelity.md cites ipsolve's own code by symbol and line (`DPS.run` L149): a citation whose
first line is no longer inside the symbol's definition is stale (the ledger's line numbers drift with every
edit; an audit on 2026-12-05 found ~70).  Checked for the first line range after every symbol in a
table's ipsolve column that names exactly one function, method or class of ipsolve, its tests or
scripts — a method several classes define by the class cited before it or the file the cell names
(:func:`locate`) — (drift inside a long function is not caught)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = re.compile(r"`([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?)`((?:[^`;)]*?))(?=`|;|\)|$)")
LINES = re.compile(r"\bL(\d+)(?:-(\d+))?\b")


def definitions() -> dict[str, list[tuple[str, int, int]]]:
    """``name`` and ``Class.name`` → [(file, first line, last line)] over ipsolve/, tests/, scripts/."""
    index: dict[str, list[tuple[str, int, int]]] = {}
    for folder in ("ipsolve", "tests", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    index.setdefault(node.name, []).append((str(path.relative_to(ROOT)), first, node.end_lineno))
                    if isinstance(node, ast.ClassDef):
                        for sub in node.body:
                            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                                first = min([sub.lineno] + [d.lineno for d in sub.decorator_list])
                                where = (str(path.relative_to(ROOT)), first, sub.end_lineno)
                                index.setdefault(f"{node.name}.{sub.name}", []).append(where)
                                index.setdefault(sub.name, []).append(where)  # a bare method name is ambiguous
    return index


def same_file(path: str, named: str) -> bool:
    """Whether ``named`` (as written in the ledger: ``dps.py``, ``solvers/dps.py``) is ``path``."""
    return ("/" + path).endswith("/" + named)


def locate(name: str, cell: str, before: str, index: dict) -> list[tuple[str, int, int]]:
    """Where ``name`` (cited in ``cell`` after the text ``before``) is defined.  A bare method name
    that several classes define is read as the method of the class cited last before it in the cell
    (```FlowPrior` (…; `velocity` L…)``), else of the one class in a file the cell names."""
    where = index.get(name, [])
    if len(where) > 1 and "." not in name:
        for cls in reversed(re.findall(r"`([A-Z]\w*)`", before)):
            if len(index.get(f"{cls}.{name}", [])) == 1:
                return index[f"{cls}.{name}"]
        files = re.findall(r"(?<![\w/])[\w/]+\.py\b", cell)
        narrowed = [w for w in where if any(same_file(w[0], f) for f in files)]
        if len(narrowed) == 1:
            return narrowed
    return where


def ipsolve_cells() -> list[tuple[int, str]]:
    """(ledger line, text) of every table cell under a header column that starts with "ipsolve"."""
    cells, column = [], None
    for n, line in enumerate((ROOT / "docs" / "fidelity.md").read_text().splitlines(), 1):
        if not line.startswith("|"):
            column = None
            continue
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if column is None:
            column = next((i for i, p in enumerate(parts) if p.lower().startswith("ipsolve")), -1)
            continue
        if column >= 0 and len(parts) > column and not set(parts[column]) <= set("-: "):
            cells.append((n, parts[column]))
    return cells


def test_ledger_line_citations_stay_inside_the_cited_definition():
    index = definitions()
    checked, stale = 0, []
    for n, cell in ipsolve_cells():
        for match in SYMBOL.finditer(cell):
            name, tail = match.group(1), match.group(2)
            where = locate(name, cell, cell[:match.start()], index)
            if len(where) != 1:  # not ipsolve's, or ambiguous
                continue
            path, first, last = where[0]
            cited = LINES.search(tail)
            if cited is None or cited.start() > 30:  # the symbol's own lines follow it; later ones are uses
                continue
            lo, hi = int(cited.group(1)), int(cited.group(2) or cited.group(1))
            checked += 1
            if not first <= lo <= last or hi < lo:  # the cited lines start outside the definition: it has moved
                stale.append(f"fidelity.md:{n} `{name}` L{lo}-{hi}: {path} defines it at L{first}-{last}")
    assert checked >= 40, checked
    assert not stale, ("stale ledger citations (`python scripts/ledger_lines.py` moves them with the code, then "
                       "reread the rows it lists):\n" + "\n".join(stale))


FILE_CITE = re.compile(r"(?<![`\w/])((?:[\w]+/)*\w+\.py)((?:,? ?L\d+(?:-\d+)?(?: \([^)]*\))?)+)")


def test_ledger_file_line_citations_point_at_code():
    """A citation by file and line with no symbol (``plug.py L43 (`lr`)``) is not covered above: an
    audit (2026-12-07) found five pointing at a blank or another line.  Each cited range must lie in
    the file and hold code; a name given in parentheses after it (```lr```, ```gamma_scale=40```) must
    be on one of its lines."""
    files = [p for p in (ROOT / "ipsolve").rglob("*.py")]
    checked, wrong = 0, []
    for n, cell in ipsolve_cells():
        for match in FILE_CITE.finditer(cell):
            found = [p for p in files if ("/" + p.relative_to(ROOT).as_posix()).endswith("/" + match.group(1))]
            if len(found) != 1:  # a test file, a reference repository's file, or a name several folders share
                continue
            lines = found[0].read_text().splitlines()
            for lo, hi, named in re.findall(r"L(\d+)(?:-(\d+))?(?: \(`([^`]+)`\))?", match.group(2)):
                lo, hi = int(lo), int(hi or lo)
                text = "\n".join(lines[lo - 1:hi])
                checked += 1
                if hi > len(lines) or not text.strip():
                    wrong.append(f"fidelity.md:{n} {match.group(1)} L{lo}-{hi}: blank or past the end")
                elif named and named.split("=")[0] not in text:
                    wrong.append(f"fidelity.md:{n} {match.group(1)} L{lo}-{hi}: {named!r} is not there")
    assert checked >= 40, checked
    assert not wrong, "ledger citations by file and line that point elsewhere:\n" + "\n".join(wrong)
