"""bench/hotpath.py must not rot: a short run of both cases (the rules case's upstream asserts that the redirected
path, the merged body and the rule headers arrived). No performance threshold."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hotpath_runs_both_cases():
    done = subprocess.run(
        [sys.executable, "bench/hotpath.py", "--requests", "200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for case in ("plain", "rules"):
        assert re.search(
            rf"^{case} \(.*\): 200 proxied requests in process: [0-9.]+ us CPU per request$", done.stdout, re.M
        )
