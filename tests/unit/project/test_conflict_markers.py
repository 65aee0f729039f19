"""No merge-conflict markers in tracked text files.

Why: a conflict resolved in code but left in a Markdown file still renders, passes every
other test and ships (it happened once, in README.md and docs/workflows.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)
TEXT = (".md", ".py", ".yaml", ".yml", ".tpl", ".toml", ".json", ".txt", ".cfg", ".sh")


def test_no_tracked_text_file_holds_a_conflict_marker() -> None:
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode().split("\0")
    found = []
    for name in tracked:
        path = ROOT / name
        if not name.endswith(TEXT) or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}"
                  for m in MARKER.finditer(text)]
    assert not found, found


def test_the_marker_pattern_finds_a_conflict() -> None:
    sample = "a\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> main\n"
    assert len(MARKER.findall(sample)) == 3
