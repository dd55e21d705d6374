"""Live API (WebSocket) concurrency and relay latency of one gptload instance.

    python bench/live.py                  # 200 sessions (the target: RSS < 400 MiB, < 5 ms added per frame)
    python bench/live.py --sessions 50    # fewer

Starts the fake Live upstream (tests/fakes/fake_live.py) and ``python main.py`` (SQLite, THREADS=1000, plain ws://,
one worker) in their own processes, opens N sessions through the proxy and holds them all open, then measures:

- the server's RSS (arbiter + worker) and thread count with N sessions open, and before any;
- the round trip of a small text turn (client -> proxy -> fake -> proxy -> client) through the proxy with N sessions
  open, against the same round trip straight to the fake: each round trip crosses the relay twice (one frame each
  way), so the added latency *per frame* is half the difference. p50 and p99 over the rounds, a few sessions at a
  time;
- the server's CPU seconds for the whole run;
- worst-case memory: ``--flood`` of the open sessions each tell the fake upstream to stop reading (``hold``), then
  send messages of ``--flood-size`` bytes as fast as the proxy takes them; once every sender is blocked (TCP
  backpressure), the server's RSS says what a session's bounded queues hold at most.

Prints a markdown table (and writes bench/results/live.md). No thresholds are checked: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fakes.fake_gemini import make_key  # noqa: E402

AUTH_KEY = "bench-admin-secret-0123456789"
PROXY_KEY = "bench-live-proxy-key-123"
PATH = "ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}})
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def threads(pid: int) -> int:
    return sum(len(list(Path(f"/proc/{p}/task").iterdir())) for p in tree(pid))


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def turn(text: str) -> str:
    return json.dumps({"clientContent": {"turns": [{"parts": [{"text": text}]}], "turnComplete": True}})


async def open_session(url: str, headers: dict) -> object:
    ws = await connect(url, additional_headers=headers, proxy=None, open_timeout=30, ping_interval=None)
    await ws.send(SETUP)
    assert json.loads(await ws.recv()) == {"setupComplete": {}}
    return ws


async def rtt(ws, text: str) -> float:
    started = time.perf_counter()
    await ws.send(turn(text))
    answer = json.loads(await ws.recv())
    assert answer["serverContent"]["modelTurn"]["parts"][0]["text"] == f"echo: {text}"
    return (time.perf_counter() - started) * 1000


async def rounds(sessions: list, n: int, parallel: int) -> list[float]:
    times: list[float] = []
    for i in range(0, n, parallel):
        batch = [sessions[(i + j) % len(sessions)] for j in range(parallel)]
        times += await asyncio.gather(*(rtt(ws, f"round {i + j}") for j, ws in enumerate(batch)))
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def flood(ws, count: int, size: int, stall: float) -> int:
    """Hold the upstream's reading, then send up to ``count`` messages of ``size`` bytes; returns how many the proxy
    took before a send stayed blocked for ``stall`` seconds."""
    await ws.send(turn("hold"))
    payload = "x" * size
    for i in range(count):
        try:
            await asyncio.wait_for(ws.send(json.dumps({"realtimeInput": {"text": f"{i} {payload}"}})), stall)
        except TimeoutError:
            return i
    return count


async def measure(args, proxy_url: str, fake_url: str, server_pid: int) -> dict:
    result: dict = {"sessions": args.sessions, "rss_idle_mib": rss_mib(server_pid), "threads_idle": threads(server_pid)}
    cpu0 = cpu_seconds(server_pid)
    started = time.perf_counter()
    sessions = []
    for i in range(0, args.sessions, 50):  # open in batches of 50
        sessions += await asyncio.gather(
            *(open_session(proxy_url, {"x-goog-api-key": PROXY_KEY}) for _ in range(min(50, args.sessions - i)))
        )
    result["open_seconds"] = time.perf_counter() - started
    result["rss_open_mib"] = rss_mib(server_pid)
    result["threads_open"] = threads(server_pid)
    direct = [await open_session(fake_url, {"x-goog-api-key": make_key(0)}) for _ in range(args.parallel)]
    await rounds(direct, 50, args.parallel)  # warm up
    await rounds(sessions, 50, args.parallel)
    via_direct = await rounds(direct, args.rounds, args.parallel)
    via_proxy = await rounds(sessions, args.rounds, args.parallel)
    result["rss_after_rounds_mib"] = rss_mib(server_pid)
    for name, values in (("direct", via_direct), ("proxy", via_proxy)):
        result[f"{name}_rtt_p50_ms"] = statistics.median(values)
        result[f"{name}_rtt_p99_ms"] = pct(values, 0.99)
    result["added_per_frame_p50_ms"] = (result["proxy_rtt_p50_ms"] - result["direct_rtt_p50_ms"]) / 2
    result["added_per_frame_p99_ms"] = (result["proxy_rtt_p99_ms"] - result["direct_rtt_p99_ms"]) / 2
    result["server_cpu_seconds"] = cpu_seconds(server_pid) - cpu0
    if args.flood:
        before = rss_mib(server_pid)
        taken = await asyncio.gather(*(flood(ws, 60, args.flood_size, 3.0) for ws in sessions[: args.flood]))
        result["flood_taken"] = sum(taken)
        result["rss_flood_mib"] = rss_mib(server_pid)
        result["rss_flood_added_mib"] = result["rss_flood_mib"] - before
    for ws in [*sessions[args.flood :], *direct]:
        await ws.close()
    for ws in sessions[: args.flood]:  # their upstream does not read: no closing handshake to wait for
        ws.transport.abort()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=400, help="timed round trips each way")
    parser.add_argument("--parallel", type=int, default=4, help="round trips in flight at once")
    parser.add_argument("--flood", type=int, default=20, help="sessions that flood a non-reading upstream (0: none)")
    parser.add_argument("--flood-size", type=int, default=900_000, help="bytes per flooding message")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "live.md"))
    args = parser.parse_args()
    keys = [make_key(i) for i in range(20)]
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_live", *keys], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    tmp = tempfile.mkdtemp(prefix="gptload-live-bench-")
    server = None
    try:
        fake_http = fake.stdout.readline().strip()
        port = 18000 + os.getpid() % 1000
        env = {
            **os.environ,
            "AUTH_KEY": AUTH_KEY,
            "PORT": str(port),
            "DATA_DIR": tmp,
            "THREADS": "1000",
            "LIVE_MAX_SESSIONS": str(max(500, args.sessions)),  # default: half of THREADS (500)
            "MAINTENANCE_INTERVAL_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {AUTH_KEY}"}
        group = {"name": "live", "upstreams": [{"url": fake_http, "weight": 1}], "proxy_keys": [PROXY_KEY]}
        requests.post(f"{base}/api/groups", json=group, headers=auth, timeout=10).raise_for_status()
        requests.post(
            f"{base}/api/groups/live/keys", json={"keys": "\n".join(keys)}, headers=auth, timeout=10
        ).raise_for_status()
        proxy_url = f"ws://127.0.0.1:{port}/proxy/live/{PATH}"
        fake_url = fake_http.replace("http://", "ws://") + f"/{PATH}"
        result = asyncio.run(measure(args, proxy_url, fake_url, server.pid))
    finally:
        for proc in (server, fake):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    load = os.getloadavg()[0]
    rows = [
        ("sessions held open at once", f"{result['sessions']}"),
        ("time to open them (s)", f"{result['open_seconds']:.1f}"),
        (
            "server RSS before / with them open / after the rounds (MiB)",
            f"{result['rss_idle_mib']:.0f} / {result['rss_open_mib']:.0f} / {result['rss_after_rounds_mib']:.0f}",
        ),
        ("server threads before / with them open", f"{result['threads_idle']} / {result['threads_open']}"),
        ("round trip direct p50 / p99 (ms)", f"{result['direct_rtt_p50_ms']:.2f} / {result['direct_rtt_p99_ms']:.2f}"),
        (
            "round trip through gptload p50 / p99 (ms)",
            f"{result['proxy_rtt_p50_ms']:.2f} / {result['proxy_rtt_p99_ms']:.2f}",
        ),
        (
            "added latency per relayed frame p50 / p99 (ms)",
            f"{result['added_per_frame_p50_ms']:.2f} / {result['added_per_frame_p99_ms']:.2f}",
        ),
        ("server CPU for the run (s)", f"{result['server_cpu_seconds']:.1f}"),
    ]
    if args.flood:
        rows.append(
            (
                f"{args.flood} sessions flooding a non-reading upstream with {args.flood_size:,}-byte messages: "
                "messages taken in / RSS added (MiB) / RSS (MiB)",
                f"{result['flood_taken']} / {result['rss_flood_added_mib']:.0f} / {result['rss_flood_mib']:.0f}",
            )
        )
    table = "\n".join(
        [
            f"# Live API bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load:.1f}, "
            f"{os.cpu_count()} CPUs; {args.rounds} round trips each way, {args.parallel} in flight)",
            "",
            "| figure | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in rows),
            "",
        ]
    )
    print(table)
    Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
