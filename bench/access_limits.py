"""Access-key limits across instances: N real servers (``python main.py``) on one Firestore emulator, one fake
upstream, one access key hammered from all of them.

    FIRESTORE_EMULATOR_HOST=127.0.0.1:8085 python bench/access_limits.py             # 2 minutes of rate, then daily
    python bench/access_limits.py --seconds 20 --json                               # a short run (the test suite)

Phase "rate": a key with ``rpm_limit`` (60) is sent ``--rate`` requests per second in total, spread evenly over
the instances, for ``--seconds``; the accepted (200) requests are counted per minute since the start and in the
worst sliding 60 s window. Phase "daily": a fresh key with ``daily_request_limit`` (100) is sent the same rate until
nothing has been accepted for ``--quiet`` seconds; the accepted total is compared with the stated bound
``limit + rate x (USAGE_FLUSH_SECONDS + SYNC_SECONDS)`` (docs/api.md, "Access keys").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptload.access.gate import HEARTBEAT_SECONDS, SYNC_SECONDS  # noqa: E402

AUTH_KEY = "bench-admin-key-0123456789"
ENCRYPTION_KEY = "bench-access-encryption-key-0123456789abcdef"
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
BODY = {"contents": [{"parts": [{"text": "hello"}]}]}
FLUSH_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process we started, in its own session (stopped by its own id, nothing else)."""

    def __init__(self, argv: list[str], env: dict, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def wait(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except requests.RequestException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


class Cluster:
    def __init__(self, instances: int, emulator: str, workdir: Path) -> None:
        self.procs: list[Proc] = []
        upstream_port = free_port()
        self.procs.append(
            Proc(
                [sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(upstream_port)],
                {},
                workdir / "upstream.log",
            )
        )
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        wait(lambda: requests.get(f"{self.upstream}/health", timeout=1).ok, 20, "the fake upstream")
        project = f"bench-access-{uuid.uuid4().hex[:8]}"
        self.urls: list[str] = []
        for i in range(instances):
            port = free_port()
            env = {
                "AUTH_KEY": AUTH_KEY,
                "PORT": str(port),
                "DATA_DIR": str(workdir / f"data-{i}"),
                "STORE": "firestore",
                "GOOGLE_CLOUD_PROJECT": project,
                "FIRESTORE_EMULATOR_HOST": emulator,
                "ENCRYPTION_KEY": ENCRYPTION_KEY,
                "STATE_REFRESH_SECONDS": "1",
                "USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
                "MAINTENANCE_INTERVAL_SECONDS": "0",
                "THREADS": "16",
                "LOG_LEVEL": "WARNING",
            }
            self.procs.append(Proc([sys.executable, "main.py"], env, workdir / f"server-{i}.log"))
            self.urls.append(f"http://127.0.0.1:{port}")
        for url in self.urls:
            wait(lambda url=url: requests.get(f"{url}/health", timeout=1).ok, 60, f"{url} to start")
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.group = f"g-{uuid.uuid4().hex[:8]}"
        self.admin("POST", "/api/groups", {"name": self.group, "upstreams": [{"url": self.upstream}]})
        keys = "\n".join(f"AIza{uuid.uuid4().hex}{uuid.uuid4().hex[:3]}" for _ in range(8))
        self.admin("POST", f"/api/groups/{self.group}/keys", {"keys": keys})

    def admin(self, method: str, path: str, payload: dict | None = None) -> dict:
        r = requests.request(
            method, f"{self.urls[0]}{path}", json=payload, headers={"Authorization": f"Bearer {AUTH_KEY}"}, timeout=30
        )
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def access_keys(self, *limits: dict) -> list[str]:
        """New access keys, known to every instance when this returns (checked with a probe key created with it:
        an instance re-reads all access keys at once when the marker moves). The probe has a (high) rpm_limit, so
        probing makes every instance publish heartbeats; probing goes on for two heartbeat periods, so that each
        instance has counted the others: the measurement starts in the steady state of a deployment that serves
        rate-limited keys (the transient when instances join is in docs/api.md)."""
        secrets = [self.admin("POST", "/api/access-keys", {"name": f"bench {x}", **x})["key"] for x in limits]
        probe = self.admin("POST", "/api/access-keys", {"name": "probe", "rpm_limit": 1_000_000})["key"]
        for url in self.urls:
            wait(lambda url=url: self.call(url, probe) == 200, 30, f"{url} to know the new access keys")
        warm_until = time.monotonic() + 2 * HEARTBEAT_SECONDS + 1
        while time.monotonic() < warm_until:
            for url in self.urls:
                self.call(url, probe)
            time.sleep(0.2)
        return secrets

    def call(self, url: str, secret: str) -> int:
        r = self.session.post(
            f"{url}/proxy/{self.group}{GEN}", headers={"x-goog-api-key": secret}, json=BODY, timeout=30
        )
        return r.status_code

    def hammer(self, secret: str, rate: float, seconds: float | None, quiet: float | None = None) -> list[tuple]:
        """Send ``rate`` requests/s in total, round robin over the instances (one paced sender per instance, each
        with a few threads), for ``seconds`` or until nothing was accepted for ``quiet`` seconds. Returns
        (seconds since start, instance, status) of every request."""
        results: list[tuple] = []
        lock = threading.Lock()
        start = time.monotonic()
        stop = threading.Event()
        last_ok = [start]
        per_sender = rate / len(self.urls)
        workers = 4

        def sender(index: int, worker: int) -> None:
            interval = workers / per_sender
            n = 0
            while not stop.is_set():
                due = start + (worker / workers) * (1 / per_sender) + n * interval
                n += 1
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                now = time.monotonic()
                if seconds is not None and now - start >= seconds:
                    return
                if quiet is not None and now - last_ok[0] >= quiet:
                    return
                try:
                    status = self.call(self.urls[index], secret)
                except requests.RequestException:
                    status = 0
                with lock:
                    results.append((now - start, index, status))
                    if status == 200:
                        last_ok[0] = time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(len(self.urls) * workers) as ex:
            futures = [ex.submit(sender, i, w) for i in range(len(self.urls)) for w in range(workers)]
            for f in futures:
                f.result()
        stop.set()
        return sorted(results)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def rate_phase(cluster: Cluster, secret: str, rpm: int, rate: float, seconds: float) -> dict:
    results = cluster.hammer(secret, rate, seconds)
    ok = [t for t, _, s in results if s == 200]
    per_minute = [sum(1 for t in ok if m * 60 <= t < (m + 1) * 60) for m in range(int(-(-seconds // 60)))]
    worst = 0
    for i, t in enumerate(ok):  # the most accepted in any 60 s window starting at an accepted request
        j = i
        while j < len(ok) and ok[j] < t + 60:
            j += 1
        worst = max(worst, j - i)
    statuses: dict[str, int] = {}
    for _, _, s in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    by_instance = [sum(1 for _, i, s in results if s == 200 and i == k) for k in range(len(cluster.urls))]
    return {
        "rpm_limit": rpm,
        "offered_per_second": rate,
        "seconds": seconds,
        "sent": len(results),
        "statuses": statuses,
        "accepted_per_minute": per_minute,
        "worst_60s_window": worst,
        "accepted_by_instance": by_instance,
    }


def daily_phase(cluster: Cluster, secret: str, limit: int, rate: float, quiet: float) -> dict:
    results = cluster.hammer(secret, rate, None, quiet=quiet)
    accepted = sum(1 for _, _, s in results if s == 200)
    first_refusal = next((t for t, _, s in results if s == 429), None)
    bound = limit + rate * (FLUSH_SECONDS + SYNC_SECONDS)
    return {
        "daily_request_limit": limit,
        "offered_per_second": rate,
        "accepted": accepted,
        "over_limit": accepted - limit,
        "bound": bound,
        "first_refusal_after_s": None if first_refusal is None else round(first_refusal, 2),
        "sent": len(results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the rate phase")
    ap.add_argument("--rpm", type=int, default=60)
    ap.add_argument("--daily", type=int, default=100)
    ap.add_argument("--rate", type=float, default=30.0, help="requests per second offered, over all instances")
    ap.add_argument("--quiet", type=float, default=15.0, help="daily phase ends after this long without a 200")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not emulator:
        sys.exit("FIRESTORE_EMULATOR_HOST is not set (start one: bash .ci/firestore-emulator.sh start)")
    import tempfile

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gptload-access-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.instances, emulator, workdir)
    try:
        rate_key, daily_key = cluster.access_keys({"rpm_limit": args.rpm}, {"daily_request_limit": args.daily})
        out = {
            "instances": args.instances,
            "heartbeat_seconds": HEARTBEAT_SECONDS,
            "sync_seconds": SYNC_SECONDS,
            "flush_seconds": FLUSH_SECONDS,
            "rate": rate_phase(cluster, rate_key, args.rpm, args.rate, args.seconds),
            "daily": daily_phase(cluster, daily_key, args.daily, args.rate, args.quiet),
        }
    finally:
        cluster.close()
    if args.json:
        print(json.dumps(out))
        return
    r, d = out["rate"], out["daily"]
    print(f"{args.instances} instances on the Firestore emulator, heartbeat {HEARTBEAT_SECONDS:g} s, usage sync ")
    print(f"{SYNC_SECONDS:g} s, usage flush {FLUSH_SECONDS:g} s (machine shared with other work: figures are noisy)")
    print(f"rate:  rpm_limit {r['rpm_limit']}, {r['offered_per_second']:g} req/s offered for {r['seconds']:g} s")
    print(f"       accepted per minute since the start: {r['accepted_per_minute']}")
    print(f"       worst sliding 60 s window: {r['worst_60s_window']}; per instance: {r['accepted_by_instance']}")
    print(f"       statuses: {r['statuses']}")
    print(f"daily: daily_request_limit {d['daily_request_limit']}, {d['offered_per_second']:g} req/s offered")
    print(f"       accepted {d['accepted']} (over the limit by {d['over_limit']}; stated bound {d['bound']:g})")
    print(f"       first refusal after {d['first_refusal_after_s']} s; {d['sent']} requests sent")


if __name__ == "__main__":
    main()
