"""The README documents every stop reason the code can give a turn, and no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `turn.stop_reason = "x"` and `turn.stop_reason, turn.error = "x", ...`
ASSIGNED = re.compile(r"\bstop_reason(?:\s*,\s*[\w.]+)*\s*=\s*\"(\w+)\"")


def test_every_stop_reason_is_in_the_readme() -> None:
    defined = set()
    for path in (ROOT / "src" / "llmos").rglob("*.py"):
        if path.parent.name == "llm":  # providers' own stop reasons, not a turn's
            continue
        defined |= set(ASSIGNED.findall(path.read_text()))
    assert {"end_turn", "repeated_call", "cancelled"} <= defined  # the pattern still finds them
    readme = (ROOT / "README.md").read_text()
    table = readme.split("**Stop reasons.**")[1].split("\n\n**")[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert defined == documented
