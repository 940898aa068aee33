"""The option tables of ``conf/README.md``, generated from the config files themselves: one row
per preset of each group (``conf/<group>/*.yaml``, described by the first line of its header
comment) and one per top-level setting of ``conf/config.yaml`` (its default and inline comment).

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


def header_line(path: Path) -> str:
    """The first line of a config file's header comment."""
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    return first.lstrip("#").strip().rstrip(".,;:").replace("|", "\\|") if first.startswith("#") else ""


def preset_rows() -> list[str]:
    rows = ["| group | preset | what it is |", "|---|---|---|"]
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            rows.append(f"| `{group}` | `{path.stem}` | {header_line(path)} |")
    return rows


def setting_rows() -> list[str]:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for line in (CONF / "config.yaml").read_text().splitlines():
        match = re.match(r"^([a-z_]+):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if not match or match.group(1) in ("defaults", "hydra"):
            continue
        key, default, comment = match.groups()
        rows.append(f"| `{key}` | `{default}` | {(comment or '').replace('|', chr(92) + '|')} |")
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


if __name__ == "__main__":
    main()
