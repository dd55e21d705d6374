"""The benchmark harness must not rot: run `python bench/run.py --smoke` and check it produced the whole table.

No performance thresholds: the smoke run only checks that every target ran, every phase finished without errors,
and every row is in the report. Needs `wrk` (Debian: apt-get install -y wrk): skipped without it locally,
a failure in CI (CI=true), where .ci/run is expected to install it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "throughput c=1 (req/s)",
    "latency c=1 p50 (ms)",
    "latency c=1 p99 (ms)",
    "throughput c=32 (req/s)",
    "latency c=32 p50 (ms)",
    "latency c=32 p99 (ms)",
    "added latency over direct c=1 p50 (ms)",
    "added latency over direct c=1 p99 (ms)",
    "CPU s of the server per 1,000 requests",
    "RSS after soak 1 (MiB)",
    "RSS after soak 2 (MiB)",
    "RSS growth over soak 2 (MiB)",
    "RSS keeps growing over soak 2?",
    "cold start: process start to first 200 (ms)",
    "stream: time to first byte p50 (ms)",
    "stream: first SSE event p50 (ms)",
    "stream: worst extra delay of a chunk vs direct (ms)",
    "Firestore reads per 1,000 requests",
    "Firestore writes per 1,000 requests",
    "errors (non-2xx, socket) in all load phases",
]


def _table_row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"row {label!r} missing from the report:\n{md}")


def test_bench_smoke_runs_and_writes_the_whole_table(tmp_path):
    if not shutil.which("wrk"):
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is not installed: .ci/run must `apt-get install -y wrk` for the bench smoke test")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    out = tmp_path / "smoke.md"
    args = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)]
    if os.environ.get("BENCH_SMOKE_FIRESTORE", "1") == "0":
        args.append("--no-firestore")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, (
        f"bench smoke failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    md = out.read_text()
    assert "| metric |" in proc.stdout, "the table was not printed"

    header = _table_row(md, "metric")
    for col in ("direct", "baseline", "proxy", "proxy/baseline"):
        assert col in header, f"column {col!r} missing: {header}"
    for label in ROWS:
        cells = _table_row(md, label)
        assert len(cells) == len(header), f"row {label!r} has {len(cells)} cells, header {len(header)}"

    proxy = header.index("proxy")
    # sane numbers: the proxy answered, with no errors, and is slower than talking to the fake directly
    assert float(_table_row(md, "throughput c=32 (req/s)")[proxy].replace(",", "")) > 0
    assert _table_row(md, "errors (non-2xx, socket) in all load phases")[proxy] == "0"
    assert _table_row(md, "cold start: process start to first 200 (ms)")[proxy] != "n/a"
    assert _table_row(md, "stream: worst extra delay of a chunk vs direct (ms)")[proxy] != "n/a"

    raw = json.loads(out.with_suffix(".json").read_text())
    assert {"direct", "baseline", "proxy"} <= set(raw["results"])
    if "proxy-fs" in raw["results"]:
        store = raw["results"]["proxy-fs"].get("store")
        assert store is not None and store["reads"] >= 0 and store["writes"] >= 0
