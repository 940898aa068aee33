"""Every script under scripts/ documents itself: ``--help`` shows a description, every option and
every subcommand has a help string (a docs audit, 2026-12-07, found study subcommands without one)."""
from __future__ import annotations

import argparse
import contextlib
import io
import runpy
import sys
from pathlib import Path

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


class _Parsed(Exception):
    """Raised instead of parsing: the script has built its whole parser by then."""


def undocumented(parser: argparse.ArgumentParser, name: str) -> list[str]:
    """``name``'s options and subcommands (recursively) that have no help string."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for command, sub in action.choices.items():
                if not helps.get(command):
                    missing.append(f"{name} {command}: no help")
                missing += undocumented(sub, f"{name} {command}")
        elif not action.help:
            missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest} has no help")
    return missing


def test_every_script_option_has_help(monkeypatch):
    parsers = {}

    def capture(self, *args, **kwargs):
        parsers[current] = self
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    monkeypatch.syspath_prepend(str(SCRIPTS[0].parent))  # the studies import each other
    for path in SCRIPTS:
        current = path.name
        monkeypatch.setattr(sys, "argv", [str(path)])
        with contextlib.suppress(_Parsed), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
    assert sorted(parsers) == [p.name for p in SCRIPTS]  # each script reached its parser
    assert all(p.description for p in parsers.values()), [n for n, p in parsers.items() if not p.description]
    missing = [m for name, parser in parsers.items() for m in undocumented(parser, name)]
    assert not missing, missing


def run_script(monkeypatch, capsys, name: str, *args: str) -> tuple[int, str]:
    """``python scripts/NAME *args`` in this process: its exit status and stderr."""
    monkeypatch.syspath_prepend(str(SCRIPTS[0].parent))
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS[0].parent / name), *args])
    try:
        runpy.run_path(str(SCRIPTS[0].parent / name), run_name="__main__")
        code = 0
    except SystemExit as end:
        code = end.code
    return code, capsys.readouterr().err


def test_a_scripts_plain_mistakes_are_one_line(monkeypatch, capsys, tmp_path):
    """A missing file, an unknown solver, a wrong number: ``<script>: error: …`` and exit status 2, as
    argparse's own (they were tracebacks, or an empty table with status 0: an audit, 2026-12-07)."""
    cases = [("stopping_study.py", ("analyse", str(tmp_path / "none.npz")), "No such file or directory: "),
             ("calibration_study.py", ("report", str(tmp_path / "none.jsonl")), "No such file or directory: "),
             ("quality_vs_nfe.py", ("--plot-only", "--out", str(tmp_path)), "No such file or directory: "),
             ("benchmark.py", ("--solvers", "dsp"), "invalid choice: 'dsp'"),
             ("benchmark.py", ("--speed-one", "nosuch", "1", "10"), "unknown solver 'nosuch'"),
             ("benchmark.py", ("--speed-one", "dps", "one", "10"), "BATCH and BUDGET are positive whole numbers"),
             ("noise_study.py", ("--sizes", "7"), "7 is too small; at least 31 pixels")]
    for name, args, expected in cases:
        code, err = run_script(monkeypatch, capsys, name, *args)
        lines = err.strip().splitlines()
        assert code == 2 and lines[-1].startswith(f"{name}: error: ") and expected in lines[-1], (name, err)
        assert "Traceback" not in err, (name, err)
