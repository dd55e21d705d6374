"""The repository stands alone: nothing in it refers to files outside it or to this machine's paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The shared folder beside the clone, and absolute paths of a developer machine; written from parts so
# that this file, which must name them, does not count as referring to them itself.
_UP, _ABSOLUTE = re.escape("../") + "shared", "/" + "(?:work/(?:shared|main)|root|home/\\w+)" + "/"
OUTSIDE = re.compile(f"{_UP}|{_ABSOLUTE}")


SKIP_DIRS = {
    ".git",
    "data",
    "test-artifacts",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "node_modules",
}


def tracked_files() -> list[Path]:
    """The files git tracks; without git (an exported tree), every file outside caches and local data."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.suffix not in (".png", ".ico") and "__pycache__" not in p.parts]


def test_no_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []
