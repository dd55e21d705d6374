"""Many long streams through one server: ``python bench/run.py --streams N`` (or ``python bench/streams.py N``).

    python bench/run.py --streams 1000                    # 1,000 streams of 60 s, a chunk every 500 ms
    python bench/run.py --streams 1000 --env THREADS=1000 --label gthread-1000
    python bench/run.py --streams 50 --stream-seconds 5   # quick look

What runs (all on 127.0.0.1; the bench starts and stops its own processes):

- the fake upstream (``bench/fake_upstream.py``) paces each streamed answer (one SSE event every
  ``--interval-ms``, ``--stream-seconds`` long) and stamps every event with its send time (``"sentAt"``,
  ``time.monotonic()``, which is the same clock in every process on Linux);
- the proxy, ``python main.py`` on the embedded SQLite store, with the candidate's environment (``--env``), pinned
  to one core with ``taskset -c 0`` when ``taskset`` exists and the machine has more than one core (a 1 vCPU
  instance); the fake and this client are pinned to the other cores;
- this client (one asyncio process) opens N streams through the proxy, ramped over ``--ramp`` seconds, and for
  every event it receives computes its *delay*: arrival time minus ``sentAt``, i.e. how long the event took from
  the upstream's write to the client through the proxy; meanwhile it sends a plain (non-streamed)
  ``generateContent`` every ``--plain-every`` seconds and records its latency.

Reported: streams open at once (the most, and whether all N were open together), complete streams, errors, event
delay percentiles (all events, and only those sent while all N streams were open), plain requests' latency,
the server's CPU (utime+stime over wall time, whole run and steady phase) and RSS (peak, and at the end), sampled
every second from /proc. It checks no threshold; ``--target`` prints the issue's target beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402 - bench/run.py's process and HTTP helpers

STREAM_PATH = "/proxy/bench/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
PLAIN_PATH = "/proxy/bench" + bench.MODEL_PATH
_SENT = re.compile(rb'"sentAt":([0-9.]+)')


@dataclass
class Tally:
    """What the client saw."""

    n: int
    open_now: int = 0
    open_max: int = 0
    all_open_at: float | None = None  # monotonic time when all n were open at once (first time)
    all_open_until: float | None = None  # ... and when the first of them ended after that
    complete: int = 0
    errors: list[str] = field(default_factory=list)
    delays: list[tuple[float, float]] = field(default_factory=list)  # (sentAt, delay seconds)
    events: int = 0
    plain: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)


async def one_stream(port: int, tally: Tally, expect_events: int, timeout: float) -> None:
    body = bench.BODY
    head = (
        f"POST {STREAM_PATH} HTTP/1.1\r\nHost: {bench.HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"x-goog-api-key: {bench.PROXY_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    opened = False
    got = 0
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(bench.HOST, port), 30)
    except (OSError, TimeoutError) as exc:
        tally.errors.append(f"connect: {type(exc).__name__}")
        return
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        chunked = False
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if status != 200:
            rest = await asyncio.wait_for(reader.read(2000), timeout)
            tally.errors.append(f"status {status}: {rest[:200]!r}")
            return
        opened = True
        tally.open_now += 1
        tally.open_max = max(tally.open_max, tally.open_now)
        if tally.open_now == tally.n and tally.all_open_at is None:
            tally.all_open_at = time.monotonic()
        pending = b""
        while True:
            if chunked:
                size_line = await asyncio.wait_for(reader.readline(), timeout)
                if not size_line:
                    raise ConnectionError("connection closed mid-stream")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                data = data[:-2]
                if size == 0:
                    break
            else:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    break
            now = time.monotonic()
            pending += data
            whole = pending.split(b"\r\n\r\n")
            pending = whole.pop()
            for event in whole:
                m = _SENT.search(event)
                if m:
                    sent = float(m.group(1))
                    tally.delays.append((sent, now - sent))
                    got += 1
        tally.events += got
        if got >= expect_events:
            tally.complete += 1
        else:
            tally.errors.append(f"stream ended after {got} of {expect_events} events")
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        tally.errors.append(f"stream broke after {got} events: {type(exc).__name__}")
    finally:
        if opened:
            if tally.all_open_at is not None and tally.all_open_until is None:
                tally.all_open_until = time.monotonic()
            tally.open_now -= 1
        writer.close()


def plain_loop(port: int, tally: Tally, every: float, stop: threading.Event) -> None:
    """A plain generateContent every ``every`` seconds, on a fresh connection, from a thread of its own (a slow
    answer must not delay the event loop's timestamps)."""
    while not stop.wait(every):
        t0 = time.perf_counter()
        try:
            status, _ = bench.http_call(
                port,
                "POST",
                PLAIN_PATH,
                bench.BODY,
                {"x-goog-api-key": bench.PROXY_KEY, "Content-Type": "application/json"},
                timeout=30,
            )
        except OSError:
            status = 0
        tally.plain.append((status, time.perf_counter() - t0))


async def drive(port: int, tally: Tally, ramp: float, expect_events: int, stream_seconds: float) -> None:
    tasks = []
    gap = ramp / max(1, tally.n)
    start = time.monotonic()
    for i in range(tally.n):
        delay = start + i * gap - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_stream(port, tally, expect_events, timeout=30 + stream_seconds / 4)))
    await asyncio.gather(*tasks)


class Sampler(threading.Thread):
    """CPU seconds and RSS of the server every second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, cpu s, rss MiB)
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), bench.cpu_seconds(self.pid), bench.rss_mib(self.pid)))
            if self.stop.wait(1.0):
                self.samples.append((time.monotonic(), bench.cpu_seconds(self.pid), bench.rss_mib(self.pid)))
                return

    def cpu_share(self, t0: float | None = None, t1: float | None = None) -> float | None:
        pts = [s for s in self.samples if (t0 is None or s[0] >= t0) and (t1 is None or s[0] <= t1)]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return None
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def boost(pids: list[int], nice: int) -> list[int]:
    """Raise the scheduling priority of ``pids``' session groups (Linux autogroups: nice values only weigh within a
    session, and each process the bench starts has its own), so that on a shared machine the server gets its core
    as a dedicated vCPU would. Needs root (or CAP_SYS_NICE); returns the pids it could boost."""
    done = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
            done.append(pid)
        except OSError:
            pass
    return done


def cpu_pressure() -> float | None:
    """Linux PSI: the share of the last 60 s in which some runnable task waited for a CPU, in %."""
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        return float(dict(kv.split("=") for kv in some[1:])["avg60"])
    except (OSError, ValueError, KeyError, IndexError):
        return None


def taskset(cores: str) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cores]
    return []


def server_argv(kind: str, stack_kib: int, port: int, switch_ms: float = 0.0) -> list[str]:
    """``main``: ``python main.py`` (gptload.server's hardened gthread); ``ff``: functions-framework's own gunicorn
    serving ``main.handler``, as Cloud Run runs the function. ``stack_kib``: the threads' stack size."""
    main_py = str(bench.ROOT / "main.py")
    if kind == "ff":
        args = ["--target", "handler", "--source", main_py, "--host", bench.HOST, "--port", str(port)]
        code = "import sys; from functions_framework._cli import _cli; sys.argv[0] = 'functions-framework'; _cli()"
    else:
        code = "import runpy, sys; sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__')"
        args = [main_py]
    if stack_kib:
        code = f"import threading; threading.stack_size({stack_kib * 1024}); " + code
    if switch_ms:
        code = f"import sys; sys.setswitchinterval({switch_ms / 1000}); " + code
    return [sys.executable, "-c", code, *args]


def start_server(
    env_extra: dict,
    work: Path,
    logdir: Path,
    fake_port: int,
    pin: list[str],
    kind: str = "main",
    stack_kib: int = 0,
    switch_ms: float = 0.0,
) -> tuple[bench.Server, int]:
    env = {
        "AUTH_KEY": bench.AUTH_KEY,
        "DATA_DIR": str(work / "data"),
        "LOG_LEVEL": "WARNING",
        "MAINTENANCE_INTERVAL_SECONDS": "0",
        **env_extra,
    }
    port = bench.free_port()
    argv = [*pin, *server_argv(kind, stack_kib, port, switch_ms)]
    srv = bench.Server("proxy-streams", argv, {**env, "PORT": str(port)}, bench.ROOT, logdir)
    try:
        bench.wait_until(lambda: bench.http_call(port, "GET", "/health", timeout=2)[0] == 200, 60, 0.05, srv)
        bench.setup_group(port, fake_port)
        bench.wait_until(lambda: bench.proxied_ok(port), 30, 0.05, srv)
    except Exception:
        srv.stop()
        raise
    return srv, port


def summarize(paths: list[Path]) -> str:
    """One table of several runs (their JSON results), for bench/results/streams.md."""
    head = (
        "| candidate | server | open at once / complete / errors | event delay p50 / p99 / max (ms), all open "
        "| plain requests ok, p50 / p99 (ms) | CPU (one core) all open | RSS peak (MiB) | priority boost "
        "| machine's CPU pressure before / after (%) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for path in paths:
        r = json.loads(path.read_text())
        s, p = r["steady_delay_ms"], r["plain"]
        rows.append(
            f"| {r['label']} ({r['when']}) | {r.get('server', 'main')}, THREADS={r['env'].get('THREADS')} "
            f"| {r['open_max']} of {r['streams']} / {r['complete']} / {r['errors']} "
            f"| {s['50']} / {s['99']} / {s['100']} | {p['ok']} of {p['sent']}, {p['p50_ms']} / {p['p99_ms']} "
            f"| {r['cpu_share_steady']} | {r['rss_peak_mib']} | {r.get('boost', 'no')} "
            f"| {r.get('cpu_pressure_before', '-')} / {r.get('cpu_pressure_after', '-')} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == "--summarize":  # python bench/streams.py --summarize results/streams-*.json
        print(summarize([Path(a) for a in argv[1:]]), end="")
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("streams", type=int, help="concurrent streams")
    ap.add_argument("--stream-seconds", type=float, default=60.0)
    ap.add_argument("--interval-ms", type=float, default=500.0)
    ap.add_argument("--ramp", type=float, default=None, help="seconds over which streams open (default N/100)")
    ap.add_argument("--plain-every", type=float, default=0.5, help="seconds between plain requests meanwhile")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    ap.add_argument("--label", default=None, help="name of this candidate in the report")
    ap.add_argument(
        "--server",
        choices=("main", "ff"),
        default="main",
        help="main: python main.py (default); ff: functions-framework's gunicorn, as on Cloud Run",
    )
    ap.add_argument("--switch-ms", type=float, default=0.0, help="the server's sys.setswitchinterval, in ms")
    ap.add_argument("--stack-kib", type=int, default=0, help="thread stack size of the server (default: the OS's)")
    ap.add_argument(
        "--boost",
        type=int,
        default=0,
        help="autogroup nice (-20..19) for the server, the fake and this client: a shared machine's neighbours then "
        "take less of their cores (root only)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to one core")
    ap.add_argument("--out", default=None, help="markdown (default bench/results/streams-LABEL.md; JSON beside)")
    args = ap.parse_args(argv)
    env_extra = dict(kv.split("=", 1) for kv in args.env)
    env_extra.setdefault("THREADS", str(max(8, args.streams + 16)))
    label = args.label or "threads-" + env_extra["THREADS"]
    ramp = args.ramp if args.ramp is not None else max(1.0, args.streams / 100)
    chunks = max(1, round(args.stream_seconds * 1000 / args.interval_ms))
    ncpu = os.cpu_count() or 1
    pin_server = [] if args.no_pin else taskset("0")
    pin_rest = taskset(f"1-{ncpu - 1}") if pin_server else []
    if pin_rest:
        os.sched_setaffinity(0, set(range(1, ncpu)))  # this client too, off the server's core

    work = Path(tempfile.mkdtemp(prefix="gptload-streams-"))
    logdir = work / "logs"
    logdir.mkdir()
    servers: list[bench.Server] = []
    load_before = os.getloadavg()
    pressure_before = cpu_pressure()
    tally = Tally(args.streams)
    try:
        fake_port = bench.free_port()
        fake = bench.Server(
            "fake-upstream",
            [
                *pin_rest,
                sys.executable,
                str(BENCH / "fake_upstream.py"),
                "--host",
                bench.HOST,
                "--port",
                str(fake_port),
                "--chunks",
                str(chunks),
                "--interval-ms",
                str(args.interval_ms),
            ],
            {},
            bench.ROOT,
            logdir,
        )
        servers.append(fake)
        bench.wait_until(lambda: bench.http_call(fake_port, "GET", "/health", timeout=2)[0] == 200, 20, 0.02, fake)
        srv, port = start_server(
            env_extra, work, logdir, fake_port, pin_server, args.server, args.stack_kib, args.switch_ms
        )
        servers.append(srv)
        boosted = boost([srv.pid, *bench.descendants(srv.pid), fake.pid, os.getpid()], args.boost) if args.boost else []
        bench.log(f"{label}: {args.streams} streams x {args.stream_seconds:g} s, ramp {ramp:g} s")
        sampler = Sampler(srv.pid)
        sampler.start()
        stop_plain = threading.Event()
        plain = threading.Thread(target=plain_loop, args=(port, tally, args.plain_every, stop_plain), daemon=True)
        plain.start()
        t_begin = time.monotonic()
        asyncio.run(drive(port, tally, ramp, chunks, args.stream_seconds))
        t_end = time.monotonic()
        stop_plain.set()
        plain.join(60)
        sampler.stop.set()
        sampler.join(5)
        alive = srv.alive()
    finally:
        for s in reversed(servers):
            s.stop()
    load_after = os.getloadavg()
    pressure_after = cpu_pressure()

    delays = [d for _, d in tally.delays]
    steady = (
        [d for sent, d in tally.delays if tally.all_open_at <= sent <= (tally.all_open_until or t_end)]
        if tally.all_open_at is not None
        else []
    )
    plain_ok = [t for s, t in tally.plain if s == 200]
    rss = [s[2] for s in sampler.samples]
    result = {
        "label": label,
        "env": {k: ("***" if any(w in k for w in ("KEY", "TOKEN", "SECRET")) else v) for k, v in env_extra.items()},
        "server": args.server
        + (f", thread stack {args.stack_kib} KiB" if args.stack_kib else "")
        + (f", switch interval {args.switch_ms:g} ms" if args.switch_ms else ""),
        "streams": args.streams,
        "stream_seconds": args.stream_seconds,
        "interval_ms": args.interval_ms,
        "events_per_stream": chunks,
        "ramp_seconds": ramp,
        "pinned": " ".join(pin_server) or "no",
        "boost": f"autogroup nice {args.boost} ({len(boosted)} processes)" if args.boost else "no",
        "open_max": tally.open_max,
        "all_open_seconds": (
            round((tally.all_open_until or t_end) - tally.all_open_at, 1) if tally.all_open_at is not None else 0
        ),
        "complete": tally.complete,
        "errors": len(tally.errors),
        "error_kinds": sorted({e[:80] for e in tally.errors})[:10],
        "events": tally.events,
        "delay_ms": {p: _ms(pct(delays, p)) for p in (50, 90, 99, 99.9, 100)},
        "steady_delay_ms": {p: _ms(pct(steady, p)) for p in (50, 90, 99, 99.9, 100)},
        "plain": {
            "sent": len(tally.plain),
            "ok": len(plain_ok),
            "p50_ms": _ms(pct(plain_ok, 50)),
            "p99_ms": _ms(pct(plain_ok, 99)),
            "max_ms": _ms(max(plain_ok) if plain_ok else None),
        },
        "cpu_share_run": _r(sampler.cpu_share()),
        "cpu_share_steady": _r(sampler.cpu_share(tally.all_open_at, tally.all_open_until)),
        "cpu_seconds": _r(sampler.samples[-1][1] - sampler.samples[0][1]) if sampler.samples else None,
        "rss_peak_mib": round(max(rss), 1) if rss else None,
        "rss_end_mib": round(rss[-1], 1) if rss else None,
        "server_alive_at_end": alive,
        "wall_seconds": round(t_end - t_begin, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cpu_pressure_before": pressure_before,
        "cpu_pressure_after": pressure_after,
        "cpus": ncpu,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    md = report(result)
    print(md)
    out = Path(args.out) if args.out else bench.RESULTS / f"streams-{label}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True) if not tally.errors and alive else bench.log(f"logs kept in {logdir}")
    return 0 if not tally.errors and alive else 1


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def report(r: dict) -> str:
    d, s, p = r["delay_ms"], r["steady_delay_ms"], r["plain"]
    rows = [
        ("streams asked / open at once (max) / complete", f"{r['streams']} / {r['open_max']} / {r['complete']}"),
        ("seconds all were open together", f"{r['all_open_seconds']}"),
        ("stream errors", f"{r['errors']} {'; '.join(r['error_kinds'])}".strip()),
        ("events relayed", f"{r['events']:,} (of {r['streams'] * r['events_per_stream']:,})"),
        ("event delay p50 / p90 / p99 / p99.9 / max (ms)", " / ".join(str(d[k]) for k in (50, 90, 99, 99.9, 100))),
        ("... while all streams were open (ms)", " / ".join(str(s[k]) for k in (50, 90, 99, 99.9, 100))),
        (
            "plain requests meanwhile: ok / sent, p50 / p99 / max (ms)",
            f"{p['ok']} / {p['sent']}, {p['p50_ms']} / {p['p99_ms']} / {p['max_ms']}",
        ),
        ("server CPU (share of one core): whole run / all open", f"{r['cpu_share_run']} / {r['cpu_share_steady']}"),
        ("server RSS peak / at the end (MiB)", f"{r['rss_peak_mib']} / {r['rss_end_mib']}"),
    ]
    lines = [
        f"### streams: {r['label']}",
        "",
        f"{r['when']}; server {r['server']}, env {r['env']}; {r['streams']} streams of {r['stream_seconds']:g} s, "
        "an event every "
        f"{r['interval_ms']:g} ms, opened over {r['ramp_seconds']:g} s; server pinned: {r['pinned']}; "
        f"priority boost: {r.get('boost', 'no')}; "
        f"{r['cpus']} CPUs, load average before {r['load_before']} after {r['load_after']} (it counts the server's own "
        f"runnable threads), CPU pressure (share of time something waited for a CPU, last 60 s) before "
        f"{r.get('cpu_pressure_before')} % after {r.get('cpu_pressure_after')} % (a shared machine).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
