"""The option tables of ``conf/README.md``, generated from the config files themselves: one row
per preset of each group (``conf/<group>/*.yaml``, described by the first sentence of its header
comment) and one per setting of ``conf/config.yaml`` and of the data presets (its default and inline
comment).

    python scripts/conf_table.py           # print the tables
    python scripts/conf_table.py --write   # rewrite them in conf/README.md (between the markers)

``tests/test_configs.py`` checks that conf/README.md holds exactly what this prints.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("operator", "solver", "prior", "data")
BEGIN, END = "<!-- options:begin (scripts/conf_table.py) -->", "<!-- options:end -->"


ABBREVIATION = re.compile(r"(?:^|[^A-Za-z])(?:e\.g|i\.e|cf|vs|etc|approx|Fig|Eq|Alg|et al)$")  # a stop that ends no sentence
LONGEST = 240  # characters of a description: a longer first sentence is cut at a word, with "…"


def header_line(path: Path) -> str:
    """The first sentence of a config file's header comment (its lines up to the first blank or
    setting line, joined): up to the first full stop outside parentheses that does not end an
    abbreviation.  (The first line alone stopped mid-sentence for ~20 presets: audit 2026-12-07.)"""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or not line.lstrip("#").strip():
            break
        lines.append(line.lstrip("#").strip())
    text, depth = " ".join(lines), 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "." and depth <= 0 and (i + 1 == len(text) or text[i + 1] == " ") \
                and not ABBREVIATION.search(text[:i]):
            text = text[:i]
            break
    if len(text) > LONGEST:
        text = text[:LONGEST].rsplit(" ", 1)[0].rstrip(",;:(") + " …"
    return text.rstrip(".,;:").replace("|", "\\|")


def preset_rows() -> list[str]:
    rows = ["| group | preset | what it is |", "|---|---|---|"]
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            rows.append(f"| `{group}` | `{path.stem}` | {header_line(path)} |")
    return rows


SETTING = re.compile(r"^( *)([a-z_0-9]+):\s*(.*?)\s*(?:#\s*(.*))?$")


def _cell(text: str | None) -> str:
    return (text or "").replace("|", chr(92) + "|")


def setting_rows() -> list[str]:
    """``conf/config.yaml``'s settings (nested ones as ``parent.key``, e.g. ``calibrate.images``),
    then the ``data.*`` settings of the data presets, each with the presets that have it."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    parent = None
    for line in (CONF / "config.yaml").read_text().splitlines():
        match = SETTING.match(line)
        if not match:
            continue
        indent, key, default, comment = match.groups()
        if not indent:
            parent = key if not default else None
            if key in ("defaults", "hydra"):
                parent = "hydra"
                continue
        elif parent in (None, "hydra") or len(indent) != 2:
            continue
        else:
            key = f"{parent}.{key}"
        rows.append(f"| `{key}` | {f'`{default}`' if default else '(group)'} | {_cell(comment)} |")
    found: dict = {}
    for path in sorted((CONF / "data").glob("*.yaml")):
        for line in path.read_text().splitlines():
            match = SETTING.match(line)
            if match and not match.group(1) and match.group(2) not in ("defaults", "format"):
                entry = found.setdefault(match.group(2), {"defaults": {}, "comment": None})
                entry["defaults"][path.stem] = match.group(3)
                entry["comment"] = entry["comment"] or match.group(4)
    for key, entry in found.items():
        defaults = set(entry["defaults"].values())
        default = next(iter(defaults)) if len(defaults) == 1 else "per preset"
        presets = ", ".join(f"{k}" for k in entry["defaults"])
        rows.append(f"| `data.{key}` | `{default}` | {_cell(entry['comment'])} (data={presets}) |")
    return rows


def tables() -> str:
    return "\n".join([BEGIN, "", *preset_rows(), "", *setting_rows(), "", END])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the tables in conf/README.md")
    args = ap.parse_args(argv)
    if not args.write:
        print(tables())
        return
    readme = CONF / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + tables() + text[end:])
    print(f"rewrote the option tables in {readme}")


if __name__ == "__main__":  # (no ipsolve import: a maintainer tool that runs with any Python)
    main()
