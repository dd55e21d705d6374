"""Access-key limits hold for the whole deployment: three real server processes on one Firestore emulator, a key
hammered from all three (``bench/access_limits.py``, here in its short form; the 2-minute measurement is the bench
script's default run, its figures in docs/api.md, "Access keys").

- rpm_limit 60, 30 requests/s offered for 15 s: every instance admits its third at once and then refuses, so the
  accepted count of the window is 60 within +/- 20 % (the same bound the 2-minute run checks per minute);
- daily_request_limit 100 at 30 requests/s: at least 100 and at most the stated bound
  100 + 30/s x (usage flush 5 s + usage sync 1 s) = 280 accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import require
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.firestore


def test_rate_and_daily_limits_across_three_instances(tmp_path):
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    require(bool(host), "FIRESTORE_EMULATOR_HOST is not set (.ci/firestore-emulator.sh start)")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "access_limits.py"),
            "--seconds",
            "15",
            "--quiet",
            "6",
            "--json",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    rate, daily = out["rate"], out["daily"]
    print(f"\nACCESS LIMITS (3 instances, short run): {json.dumps(out)}")
    assert 48 <= rate["worst_60s_window"] <= 72, rate
    assert set(rate["statuses"]) == {"200", "429"}, rate  # nothing else: no errors, no 5xx
    assert all(n >= 1 for n in rate["accepted_by_instance"]), rate  # every instance enforced its own share
    assert 100 <= daily["accepted"] <= daily["bound"] == 280, daily
