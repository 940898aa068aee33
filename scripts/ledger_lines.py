"""Move docs/fidelity.md's line citations of ipsolve's own code along with the code.

An edit shifts the lines a ledger row cites; tests/test_ledger.py then reports the citation as
stale.  This script maps each cited line of a base revision (default HEAD) to the same line of
the working tree (a line diff of the file, :class:`difflib.SequenceMatcher`) and rewrites the
citation.  It moves the ``L…`` numbers that follow a symbol of ipsolve's (``DPS.run`` L149,
used by L160) up to the next backtick, in that symbol's file: in the ipsolve column always, in
the other columns where the cell names the symbol's file (``test_operators.py `test_x` L12``);
numbers after another file's name (``conf/…yaml`` L5) are left alone.  A line of a rewritten
block maps to the line at the same offset in what replaced it (clamped to its end), a deleted
line to the line now in its place: the rows listed are the ones to reread.  A symbol that is
not defined in the same file at the base revision (moved, or new) is listed, not moved.  A cell
already edited since the base revision is left alone (running the script twice moves nothing twice).

    python scripts/ledger_lines.py            # against HEAD: rewrite, print what changed
    python scripts/ledger_lines.py --base HEAD~3 --dry-run
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import re
import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / "docs" / "fidelity.md"
NUMBER = re.compile(r"\bL(\d+)(?:-(\d+))?\b")


def _ledger_test():
    """tests/test_ledger.py, which owns the citation grammar and the index of definitions."""
    spec = importlib.util.spec_from_file_location("test_ledger", ROOT / "tests" / "test_ledger.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def base_source(path: str, base: str) -> str | None:
    old = subprocess.run(["git", "show", f"{base}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return None if old.returncode else old.stdout


@cache
def base_names(path: str, base: str) -> frozenset[str]:
    """``name`` and ``Class.name`` defined at the top of ``path`` in revision ``base``."""
    source = base_source(path, base)
    if source is None:
        return frozenset()
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            for sub in node.body if isinstance(node, ast.ClassDef) else []:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.update((sub.name, f"{node.name}.{sub.name}"))
    return frozenset(names)


@cache
def line_map(path: str, base: str) -> dict[int, int]:
    """Line ``k`` of ``path`` at ``base`` → its line in the working tree (see the module docstring)."""
    source = base_source(path, base)
    if source is None:
        return {}
    before, now = source.splitlines(), (ROOT / path).read_text().splitlines()
    mapping = {}
    for _tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, now, autojunk=False).get_opcodes():
        for k in range(i1, i2):
            mapping[k + 1] = j1 + 1 + (min(k - i1, j2 - j1 - 1) if j2 > j1 else 0)
    return mapping


def moved(cell: str, ledger, index: dict, base: str, ipsolve_column: bool, unmoved: list) -> str:
    """``cell`` with the line numbers after each of ipsolve's symbols mapped to the working tree."""
    out, pos = [], 0
    for match in ledger.SYMBOL.finditer(cell):
        where = ledger.locate(match.group(1), cell, cell[:match.start()], index)
        if len(where) != 1:
            continue
        path = where[0][0]
        if not ipsolve_column and not re.search(rf"(?<![\w/]){re.escape(Path(path).name)}\b", cell):
            continue  # another column: a name shared with the reference code is not ours unless the file is named
        end = cell.find("`", match.end(1) + 1)
        end = len(cell) if end < 0 else end
        segment = cell[match.end(1) + 1:end]
        for named in re.finditer(r"(?<![\w/])[\w/]+\.(?:py|yaml)\b", segment):  # another file: not this one's numbers
            if not ledger.same_file(path, named.group(0)):
                segment = segment[:named.start()]
                break
        if not NUMBER.search(segment):
            continue
        if match.group(1) not in base_names(path, base):
            unmoved.append(f"`{match.group(1)}`: not in {path} at {base} (moved or new): check its lines by hand")
            continue
        mapping = line_map(path, base)
        start = match.end(1) + 1

        def shift(number: re.Match) -> str:
            lo, hi = (mapping.get(int(n), int(n)) if n else None for n in number.groups())
            return f"L{lo}-{hi}" if hi else f"L{lo}"

        out.append(cell[pos:start] + NUMBER.sub(shift, segment))
        pos = start + len(segment)
    return "".join(out) + cell[pos:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision the citations were right for")
    parser.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    args = parser.parse_args()
    ledger = _ledger_test()
    index = ledger.definitions()
    lines = LEDGER.read_text().splitlines(keepends=True)
    ours = {(n, cell) for n, cell in ledger.ipsolve_cells()}
    base_ledger = base_source(str(LEDGER.relative_to(ROOT)), args.base) or ""
    base_cells = {c.strip() for row in base_ledger.splitlines() if row.startswith("|")
                  for c in row.strip().strip("|").split("|")}
    changed, unmoved = 0, []
    for n, line in enumerate(lines, 1):
        if not line.startswith("|"):
            continue
        for cell in (c.strip() for c in line.strip().strip("|").split("|")):
            new = moved(cell, ledger, index, args.base, (n, cell) in ours, unmoved)
            if new != cell and cell not in base_cells:  # its numbers were set against the working tree already
                unmoved.append(f"fidelity.md:{n}: edited since {args.base}, not moved (check by hand): {cell[:70]}")
            elif new != cell:
                changed += 1
                print(f"fidelity.md:{n}: {cell[:110]}\n  -> {new[:110]}")
                lines[n - 1] = lines[n - 1].replace(cell, new, 1)
    for note in dict.fromkeys(unmoved):
        print(note)
    if changed and not args.dry_run:
        LEDGER.write_text("".join(lines))
    print(f"{changed} cell(s) {'would change' if args.dry_run else 'changed'}")


if __name__ == "__main__":  # (no ipsolve import: a maintainer tool that runs with any Python)
    main()
