"""The many-streams mode of the benchmark must not rot: `python bench/run.py --streams N` with a few short streams
holds them all at once through the real server, receives every stamped event, and serves plain requests meanwhile.

No performance thresholds (speed is measured in bench/, never asserted): only that the harness works and counts.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_streams_mode_holds_every_stream_and_counts_every_event(tmp_path):
    out = tmp_path / "streams.md"
    argv = [sys.executable, "bench/run.py", "--streams", "8", "--stream-seconds", "1", "--interval-ms", "100"]
    argv += ["--ramp", "0.2", "--plain-every", "0.2", "--no-pin", "--label", "smoke", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["open_max"] == 8 and result["complete"] == 8 and result["errors"] == 0
    assert result["events"] == 8 * result["events_per_stream"] == 80
    assert result["plain"]["sent"] >= 1 and result["plain"]["ok"] == result["plain"]["sent"]
    assert result["delay_ms"]["50"] is not None and result["rss_peak_mib"] > 0
    assert "| streams asked / open at once (max) / complete | 8 / 8 / 8 |" in out.read_text()
