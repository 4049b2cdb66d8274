"""README.md stays true: two Quick start commands, the second one is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = "python3 -m venv .venv && . .venv/bin/activate && "


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_quick_start_has_exactly_two_commands():
    cmds = _quick_start_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "sj-bwsnn train digits_bwsnn" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    test_cmd = _quick_start_commands()[1]
    assert test_cmd.startswith(VENV)
    assert test_cmd[len(VENV):] in (ROOT / ".ci" / "run").read_text()


def test_readme_has_no_unfilled_markers():
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"\b[A-Z]{4,}_[A-Z_]*OUTPUT\b|TODO|TBD", text)
