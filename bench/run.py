"""gptload benchmark: one command.

    python bench/run.py            # full run (manual; a few minutes)
    python bench/run.py --smoke    # a few hundred requests per target, well under a minute (CI)
    python bench/run.py --streams 1000   # many long streams through one server (bench/streams.py)

Starts its own fake upstream (bench/fake_upstream.py), then measures three targets on 127.0.0.1:
  direct    wrk -> fake upstream
  baseline  wrk -> bench/baseline.py (functions-framework + requests, no key pool) -> fake
  proxy     wrk -> `python main.py` (embedded SQLite store) -> fake
  proxy-fs  the proxy with STORE=firestore against the Firestore emulator, when gcloud and the emulator exist
and prints a markdown table, also written to bench/results/latest.md (raw numbers in bench/results/latest.json).
See bench/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
MODEL_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
BODY = b'{"contents":[{"role":"user","parts":[{"text":"Say hello in five words."}]}]}'
PROXY_KEY = "bench-proxy-key-123"
AUTH_KEY = "bench-admin-secret-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    smoke: bool
    threads: int
    c_high: int = 32
    phase_seconds: int = 10
    warmup_seconds: int = 2
    soak_requests: int = 10_000
    streams: int = 20
    chunks: int = 10
    interval_ms: float = 50.0
    wrk_threads: int = 2

    @classmethod
    def make(cls, smoke: bool, threads: int) -> Settings:
        s = cls(smoke=smoke, threads=threads, wrk_threads=max(1, min(2, os.cpu_count() or 1)))
        if smoke:
            s.phase_seconds, s.warmup_seconds, s.soak_requests = 1, 1, 150
            s.streams, s.chunks, s.interval_ms = 3, 5, 20.0
        return s


# ----------------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Server:
    """A server process we started (in its own session, so we can stop it and only it)."""

    def __init__(self, name: str, argv: list[str], env: dict, cwd: Path, logdir: Path):
        self.name = name
        self.logpath = logdir / f"{name}.log"
        self._log = open(self.logpath, "ab")
        full_env = {**os.environ, **env}
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env=full_env, cwd=str(cwd), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and all its live descendants (the gunicorn arbiter and its worker)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        except OSError:
            pass
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    """VmRSS of the worker(s): the descendants when there are any (gunicorn), else the process itself."""
    procs = descendants(pid) or [pid]
    total_kb = 0
    for p in procs:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024.0


# ----------------------------------------------------------------------------------------------- HTTP helpers
def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_until(fn, timeout: float, interval: float = 0.005, server: Server | None = None):
    """Poll fn() until it returns a truthy value; return (value, seconds since server start or call)."""
    t0 = server.t_start if server else time.perf_counter()
    deadline = time.perf_counter() + timeout
    last_exc = None
    while time.perf_counter() < deadline:
        if server and not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            v = fn()
            if v:
                return v, time.perf_counter() - t0
        except (OSError, http.client.HTTPException) as e:
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"not ready after {timeout}s ({last_exc}){chr(10) + server.tail() if server else ''}")


# ----------------------------------------------------------------------------------------------- wrk
def wrk(url: str, connections: int, seconds: int, api_key: str | None, threads: int, cap_per_thread: int = 0) -> dict:
    env = {**os.environ, "BENCH_API_KEY": api_key or "", "BENCH_MAX_REQUESTS": str(cap_per_thread)}
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, int(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(BENCH / "wrk_post.lua"),
        url,
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON ") :])
            kinds = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
            r["errors"] = sum(r[k] for k in kinds)
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            return r
    raise RuntimeError(f"wrk printed no summary (rc={out.returncode}):\n{out.stdout}\n{out.stderr}")


def wrk_count(url: str, n: int, connections: int, api_key: str | None, threads: int, rps_hint: float) -> dict:
    """Send about n requests (never fewer than n - a few) in one or more wrk runs; sums the counts."""
    done_req = errors = 0
    t0 = time.perf_counter()
    for _ in range(20):
        remaining = n - done_req
        if remaining <= 0:
            break
        secs = math.ceil(remaining / max(rps_hint, 1.0) * 1.05 + 0.2)
        cap = math.ceil(remaining / min(threads, connections))
        r = wrk(url, connections, min(secs, 600), api_key, threads, cap_per_thread=cap)
        done_req += r["requests"]
        errors += r["errors"]
        if r["requests"] == 0:
            break
        rps_hint = r["rps"] or rps_hint
    return {"requests": done_req, "errors": errors, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------- streaming client
def stream_once(port: int, path: str, headers: dict, timeout: float = 30.0) -> dict:
    """One streamed call on a fresh connection; the arrival time of each SSE event (seconds after send)."""
    hdrs = {
        "Host": f"{HOST}:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(BODY)),
        "Connection": "close",
        **headers,
    }
    head_lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in hdrs.items())]
    req = ("\r\n".join(head_lines) + "\r\n\r\n").encode() + BODY
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = b""
    head = None
    chunked = False
    body = b""
    pos = 0  # parse position in raw (after the head)
    events: list[float] = []
    first_byte = None
    status = 0
    try:
        t0 = time.perf_counter()
        s.sendall(req)
        while True:
            data = s.recv(65536)
            t = time.perf_counter() - t0
            if not data:
                break
            if first_byte is None:
                first_byte = t
            raw += data
            if head is None:
                i = raw.find(b"\r\n\r\n")
                if i < 0:
                    continue
                head = raw[:i].decode("latin-1")
                status = int(head.split(" ", 2)[1])
                chunked = "transfer-encoding: chunked" in head.lower()
                pos = i + 4
            if chunked:
                while True:
                    j = raw.find(b"\r\n", pos)
                    if j < 0:
                        break
                    size = int(raw[pos:j].split(b";")[0] or b"0", 16)
                    if size == 0:
                        pos = len(raw)
                        break
                    if len(raw) < j + 2 + size + 2:
                        break
                    body += raw[j + 2 : j + 2 + size]
                    pos = j + 2 + size + 2
            else:
                body += raw[pos:]
                pos = len(raw)
            n_events = body.replace(b"\r\n", b"\n").count(b"\n\n")
            while len(events) < n_events:
                events.append(t)
    finally:
        s.close()
    return {"status": status, "first_byte": first_byte, "events": events}


def stream_runs(port: int, path: str, headers: dict, n: int, chunks: int) -> dict:
    runs = [stream_once(port, path, headers) for _ in range(n)]
    ok = [r for r in runs if r["status"] == 200 and len(r["events"]) == chunks]
    return {"runs": runs, "ok": len(ok), "n": n}


def stream_summary(res: dict, ref: list[float] | None) -> dict:
    ok = [r for r in res["runs"] if r["status"] == 200 and r["events"]]
    if not ok:
        return {"ttfb_p50_ms": None, "first_event_p50_ms": None, "worst_extra_ms": None, "ok": 0, "n": res["n"]}
    out = {
        "ttfb_p50_ms": statistics.median(r["first_byte"] for r in ok) * 1000,
        "first_event_p50_ms": statistics.median(r["events"][0] for r in ok) * 1000,
        "ok": res["ok"],
        "n": res["n"],
        "worst_extra_ms": None,
    }
    if ref:
        worst = max(r["events"][i] - ref[i] for r in ok for i in range(min(len(r["events"]), len(ref))))
        out["worst_extra_ms"] = worst * 1000
    return out


def stream_reference(res: dict) -> list[float]:
    ok = [r for r in res["runs"] if r["status"] == 200 and r["events"]]
    n = min(len(r["events"]) for r in ok)
    return [statistics.median(r["events"][i] for r in ok) for i in range(n)]


# ----------------------------------------------------------------------------------------------- one target
@dataclass
class Target:
    name: str
    port: int
    prefix: str = ""  # path prefix before /v1beta/...
    api_key: str | None = None
    server: Server | None = None  # process whose CPU/RSS we measure
    cold_start_s: float | None = None
    extra: dict = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{self.prefix}{path}"


def measure(t: Target, st: Settings, stream_ref: list[float] | None, store_counter=None) -> dict:
    gen_url = t.url(MODEL_PATH)
    res: dict = {"name": t.name}
    res["store_at_start"] = store_counter.snapshot() if store_counter else None
    log(f"{t.name}: warm-up {st.warmup_seconds}s")
    res["warmup"] = wrk(gen_url, 4, st.warmup_seconds, t.api_key, st.wrk_threads)

    log(f"{t.name}: concurrency 1 for {st.phase_seconds}s")
    res["c1"] = wrk(gen_url, 1, st.phase_seconds, t.api_key, 1)
    log(f"{t.name}: concurrency {st.c_high} for {st.phase_seconds}s")
    res["c32"] = wrk(gen_url, st.c_high, st.phase_seconds, t.api_key, st.wrk_threads)

    pid = t.server.pid if t.server else None
    cpu0 = cpu_seconds(pid) if pid else None
    sc0 = store_counter.snapshot() if store_counter else None
    log(f"{t.name}: soak {st.soak_requests} requests at concurrency {st.c_high} (x2)")
    s1 = wrk_count(gen_url, st.soak_requests, st.c_high, t.api_key, st.wrk_threads, res["c32"]["rps"])
    rss1 = rss_mib(pid) if pid else None
    s2 = wrk_count(gen_url, st.soak_requests, st.c_high, t.api_key, st.wrk_threads, res["c32"]["rps"])
    rss2 = rss_mib(pid) if pid else None
    cpu1 = cpu_seconds(pid) if pid else None
    soak_n = s1["requests"] + s2["requests"]
    res["soak"] = {
        "requests_1": s1["requests"],
        "requests_2": s2["requests"],
        "errors": s1["errors"] + s2["errors"],
        "rss1_mib": rss1,
        "rss2_mib": rss2,
        "cpu_s_per_1k": (cpu1 - cpu0) / soak_n * 1000 if pid and soak_n else None,
    }
    if store_counter:
        sc1 = store_counter.snapshot()
        res["store_soak"] = {k: (sc1[k] - sc0[k]) / soak_n * 1000 for k in sc1} if soak_n else None

    log(f"{t.name}: {st.streams} streamed calls of {st.chunks} chunks")
    hdrs = {"x-goog-api-key": t.api_key} if t.api_key else {}
    sres = stream_runs(t.port, t.prefix + STREAM_PATH, hdrs, st.streams, st.chunks)
    res["stream_raw"] = sres
    res["stream"] = stream_summary(sres, stream_ref)
    res["cold_start_s"] = t.cold_start_s
    res["requests_total"] = (
        res["warmup"]["requests"] + res["c1"]["requests"] + res["c32"]["requests"] + soak_n + len(sres["runs"])
    )
    return res


# ----------------------------------------------------------------------------------------------- proxy set-up
def fake_keys(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "_-"
    return ["AIza" + "".join(rnd.choice(alphabet) for _ in range(35)) for _ in range(n)]


def admin(port: int, method: str, path: str, payload: dict) -> tuple[int, dict]:
    status, body = http_call(
        port,
        method,
        path,
        json.dumps(payload).encode(),
        {"Authorization": f"Bearer {AUTH_KEY}", "Content-Type": "application/json"},
    )
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {"raw": body[:300].decode(errors="replace")}


def setup_group(port: int, fake_port: int) -> None:
    st, b = admin(
        port,
        "POST",
        "/api/groups",
        {"name": "bench", "upstreams": [{"url": f"http://{HOST}:{fake_port}", "weight": 1}], "proxy_keys": [PROXY_KEY]},
    )
    if st not in (200, 201, 409):
        raise RuntimeError(f"creating the group failed: {st} {b}")
    st, b = admin(port, "POST", "/api/groups/bench/keys", {"keys": "\n".join(fake_keys(20))})
    if st != 200:
        raise RuntimeError(f"adding keys failed: {st} {b}")


def proxied_ok(port: int) -> bool:
    status, _ = http_call(
        port,
        "POST",
        "/proxy/bench" + MODEL_PATH,
        BODY,
        {"x-goog-api-key": PROXY_KEY, "Content-Type": "application/json"},
        timeout=5,
    )
    return status == 200


def start_proxy(
    name: str,
    st: Settings,
    env_extra: dict,
    data_dir: Path,
    fake_port: int,
    logdir: Path,
    settings: dict | None = None,
    threads: bool = True,
) -> Target:
    """Start the proxy once to configure it (group, keys, and system ``settings`` if given), stop it, start it
    again and time process start -> first proxied 200. ``threads=False``: the server's default THREADS."""
    main_py = ROOT / "main.py"
    if not main_py.exists():
        raise FileNotFoundError(f"{main_py} does not exist yet")
    env = {"AUTH_KEY": AUTH_KEY, "DATA_DIR": str(data_dir), "WORKERS": "1", **env_extra}
    if threads:
        env["THREADS"] = str(st.threads)
    port = free_port()
    srv = Server(f"{name}-setup", [sys.executable, str(main_py)], {**env, "PORT": str(port)}, ROOT, logdir)
    try:
        wait_until(lambda: http_call(port, "GET", "/health", timeout=2)[0] == 200, 60, 0.05, srv)
        setup_group(port, fake_port)
        if settings:
            status, body = admin(port, "PUT", "/api/settings", settings)
            if status != 200:
                raise RuntimeError(f"settings failed: {status} {body}")
        wait_until(lambda: proxied_ok(port), 30, 0.05, srv)
    finally:
        srv.stop()
    return restart_proxy(name, env, logdir)


def restart_proxy(name: str, env: dict, logdir: Path) -> Target:
    """Start the proxy on existing data; its cold start is process start -> first proxied 200."""
    main_py = ROOT / "main.py"
    port = free_port()
    srv = Server(name, [sys.executable, str(main_py)], {**env, "PORT": str(port)}, ROOT, logdir)
    try:
        _, cold = wait_until(lambda: proxied_ok(port), 60, 0.005, srv)
    except Exception:
        srv.stop()
        raise
    return Target(
        name, port, prefix="/proxy/bench", api_key=PROXY_KEY, server=srv, cold_start_s=cold, extra={"env": env}
    )


# ----------------------------------------------------------------------------------------------- side by side
SIDE_MODES = (
    ("sqlite", "SQLite, every request logged"),
    ("firestore", "Firestore, every request logged"),
    ("firestore-fo", "Firestore, `log_failures_only`"),
)


def side_by_side(st: Settings, fake_port: int, logdir: Path, work: Path, rounds: int, colds: int) -> tuple[str, dict]:
    """Issue 16's comparison: `python main.py` with its defaults (THREADS 128) on SQLite and on the Firestore
    emulator, every request logged (and Firestore with failures-only logging).

    The machine's speed drifts (a shared host: the same CPU loop takes 0.6 s one minute and 1.0 s the next), so
    the design compares modes close together in time rather than trusting one long phase each: all three servers
    are up at once and measured in turn, ``rounds`` short rounds with the order rotated; a round of a mode is a
    warm-up, a c=1 phase and a c=32 phase back to back. A ratio (Firestore / SQLite) is taken within each round and
    the report gives the median of those ratios. The server's CPU per request (c=32 phase) and the emulator's (the
    Firestore emulator shares this machine; a deployment's Firestore does not) come from /proc.

    Then each server is stopped (its shutdown flush counted) and restarted ``colds`` times on the same data, the
    modes interleaved: process start to the first proxied 200, once as this machine runs Python (whatever
    PYTHONDONTWRITEBYTECODE says: here it is set, so gptload's modules are compiled on every start) and once with
    a bytecode cache (PYTHONPYCACHEPREFIX in the work directory: what every start after the first does on a
    machine that writes bytecode; the start that fills the cache is not counted)."""
    from firestore_run import StoreCounter, firestore_env

    out: dict = {m: {"rounds": [], "cold_s": [], "cold_cached_s": [], "store": None} for m, _ in SIDE_MODES}
    with contextlib.ExitStack() as stack:
        env_fs, counter = stack.enter_context(firestore_env(logdir))
        fo_counter = StoreCounter(counter.upstream)
        fo_counter.start()
        stack.callback(fo_counter.stop)
        env_fo = {**env_fs, "FIRESTORE_EMULATOR_HOST": f"{HOST}:{fo_counter.port}", "GOOGLE_CLOUD_PROJECT": "bench-fo"}
        counters = {"firestore": counter, "firestore-fo": fo_counter}
        targets = {
            "sqlite": start_proxy("sbs-sqlite", st, {}, work / "sbs-sqlite", fake_port, logdir, threads=False),
            "firestore": start_proxy("sbs-firestore", st, env_fs, work / "sbs-fs", fake_port, logdir, threads=False),
            "firestore-fo": start_proxy(
                "sbs-firestore-fo",
                st,
                env_fo,
                work / "sbs-fo",
                fake_port,
                logdir,
                settings={"log_failures_only": True},
                threads=False,
            ),
        }
        for t in targets.values():
            stack.callback(lambda t=t: t.server and t.server.stop())
            out[t.name.removeprefix("sbs-")]["cold_s"].append(t.cold_start_s)
        start = {m: c.snapshot() for m, c in counters.items()}
        served = dict.fromkeys(targets, 0)
        order = [m for m, _ in SIDE_MODES]
        emulator = counter.emulator_pid
        for r in range(rounds):
            for mode in order[r % len(order) :] + order[: r % len(order)]:
                t = targets[mode]
                assert t.server is not None
                url = t.url(MODEL_PATH)
                log(f"side by side, round {r + 1}/{rounds}: {mode}")
                warm = wrk(url, 1, st.warmup_seconds, t.api_key, 1)
                c1 = wrk(url, 1, st.phase_seconds, t.api_key, 1)
                cpu0, emu0 = cpu_seconds(t.server.pid), cpu_seconds(emulator)
                c32 = wrk(url, st.c_high, st.phase_seconds, t.api_key, 1)
                cpu1, emu1 = cpu_seconds(t.server.pid), cpu_seconds(emulator)
                n = max(c32["requests"], 1)
                served[mode] += warm["requests"] + c1["requests"] + c32["requests"]
                cpu_ms, emu_ms = (cpu1 - cpu0) / n * 1000, (emu1 - emu0) / n * 1000
                out[mode]["rounds"].append({"c1": c1, "c32": c32, "cpu_ms": cpu_ms, "emulator_cpu_ms": emu_ms})
        for mode, t in targets.items():
            assert t.server is not None
            t.server.stop()  # SIGTERM: the shutdown flush is part of what these requests cost
            if mode in counters:
                end = counters[mode].snapshot()
                out[mode]["store"] = {k: (end[k] - start[mode][k]) / max(served[mode], 1) * 1000 for k in end}
        cache = {m: {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(work / f"pycache-{m}")} for m in targets}
        for mode, t in targets.items():  # fills each mode's bytecode cache (not counted)
            restart_proxy(t.name, {**t.extra["env"], **cache[mode]}, logdir).server.stop()  # type: ignore[union-attr]
        for i in range(colds):
            for mode in order[i % len(order) :] + order[: i % len(order)]:
                t = targets[mode]
                log(f"side by side, cold start {i + 1}/{colds}: {mode}")
                for key, extra in (("cold_s", {}), ("cold_cached_s", cache[mode])):
                    if key == "cold_s" and i == 0:
                        continue  # the first start of the phase above was one
                    again = restart_proxy(t.name, {**t.extra["env"], **extra}, logdir)
                    assert again.server is not None
                    again.server.stop()
                    out[mode][key].append(again.cold_start_s)
    return side_report(out, rounds), out


def _span(values: list[float], nd: int) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo, nd) if fmt(lo, nd) == fmt(hi, nd) else f"{fmt(lo, nd)}-{fmt(hi, nd)}"


def _mid(values: list[float], nd: int) -> str:
    """Median, with the min-max range after it."""
    return f"{fmt(statistics.median(values), nd)} ({_span(values, nd)})" if values else "n/a"


def side_report(out: dict, rounds: int) -> str:
    lines = [
        f"Side by side (issue 16): `python main.py` defaults (THREADS 128), wrk 1 thread, {rounds} rounds of each "
        "mode, the three servers up at once and measured in turn (order rotated per round). Each cell: median over "
        "the rounds (min-max). CPU: the server's CPU time per request in the c=32 phase.",
        "",
        "| mode | c=1 req/s | c=1 p50 (ms) | c=1 p99 (ms) | c=32 req/s | c=32 p99 (ms) | CPU per request (ms) "
        "| cold start (ms) | cold start, bytecode cached (ms) | reads / writes / RPCs per 1,000 requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows: dict = {}
    for mode, label in SIDE_MODES:
        rs = out[mode]["rounds"]
        if not rs:
            continue
        row = {
            "c1rps": [x["c1"]["rps"] for x in rs],
            "c1p50": [x["c1"]["p50_us"] / 1000 for x in rs],
            "c1p99": [x["c1"]["p99_us"] / 1000 for x in rs],
            "c32rps": [x["c32"]["rps"] for x in rs],
            "c32p99": [x["c32"]["p99_us"] / 1000 for x in rs],
            "cpu": [x["cpu_ms"] for x in rs if x.get("cpu_ms") is not None],
            "emu": [x["emulator_cpu_ms"] for x in rs if x.get("emulator_cpu_ms") is not None],
            "cold": [c * 1000 for c in out[mode]["cold_s"] if c is not None],
            "cached": [c * 1000 for c in out[mode].get("cold_cached_s", []) if c is not None],
        }
        rows[mode] = row
        st_ = out[mode]["store"]
        cost = "n/a" if not st_ else f"{st_['reads']:.1f} / {st_['writes']:.1f} / {st_['rpcs']:.1f}"
        lines.append(
            f"| {label} | {_mid(row['c1rps'], 0)} | {_mid(row['c1p50'], 2)} | {_mid(row['c1p99'], 2)} "
            f"| {_mid(row['c32rps'], 0)} | {_mid(row['c32p99'], 1)} | {_mid(row['cpu'], 2)} | {_mid(row['cold'], 0)} "
            f"| {_mid(row['cached'], 0)} | {cost} |"
        )
    if {"sqlite", "firestore"} <= rows.keys():
        s, f = rows["sqlite"], rows["firestore"]

        def paired(k: str) -> list[float]:  # Firestore / SQLite within each round
            return [b / a for a, b in zip(s[k], f[k], strict=False) if a]

        r = {k: paired(k) for k in ("c1p99", "c32p99", "c1rps", "c32rps", "cpu")}
        emu = ""
        if f["emu"]:
            emu = f"; the emulator used {statistics.median(f['emu']):.2f} ms of CPU per request beside it"
        lines += [
            "",
            "Firestore (every request logged) vs SQLite, median of the per-round ratios (min-max): "
            f"c=1 p99 {_ratio(r['c1p99'])}, c=32 p99 {_ratio(r['c32p99'])} (target <= 1.5x); "
            f"throughput c=1 {_pct(r['c1rps'])}, c=32 {_pct(r['c32rps'])} (target >= 95 %); "
            f"server CPU per request {_ratio(r['cpu'])}{emu}. "
            f"Cold start median {fmt(statistics.median(f['cold']), 0) if f['cold'] else 'n/a'} ms, "
            f"{fmt(statistics.median(f['cached']), 0) if f['cached'] else 'n/a'} ms with a bytecode cache "
            "(target <= 800 ms).",
        ]
    return "\n".join(lines) + "\n"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})" if values else "n/a"


def _pct(values: list[float]) -> str:
    return f"{statistics.median(values):.0%} ({min(values):.0%}-{max(values):.0%})" if values else "n/a"


def start_baseline(st: Settings, fake_port: int, logdir: Path) -> Target:
    port = free_port()
    ff = shutil.which("functions-framework")
    argv = ([ff] if ff else [sys.executable, "-m", "functions_framework"]) + [
        "--target",
        "handler",
        "--source",
        str(BENCH / "baseline.py"),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    env = {"UPSTREAM": f"http://{HOST}:{fake_port}", "THREADS": str(st.threads), "WORKERS": "1"}
    srv = Server("baseline", argv, env, ROOT, logdir)

    def ok() -> bool:
        return http_call(port, "POST", MODEL_PATH, BODY, {"Content-Type": "application/json"}, timeout=5)[0] == 200

    try:
        _, cold = wait_until(ok, 60, 0.005, srv)
    except Exception:
        srv.stop()
        raise
    return Target("baseline", port, server=srv, cold_start_s=cold)


# ----------------------------------------------------------------------------------------------- report
def fmt(v, nd=1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b) -> str:
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _added(r: dict, d: dict, pct: str):
    return None if r is d else (r["c1"][pct] - d["c1"][pct]) / 1000


def _growth(r: dict):
    s = r["soak"]
    return None if s["rss1_mib"] is None else s["rss2_mib"] - s["rss1_mib"]


def _ms(seconds):
    return None if seconds is None else seconds * 1000


def _errors(r: dict) -> int:
    return r["c1"]["errors"] + r["c32"]["errors"] + r["soak"]["errors"]


ROWS = [
    # (label, extractor(res, direct_res), decimals[, False = no ratio column: a ratio of two near-zero numbers])
    ("throughput c=1 (req/s)", lambda r, d: r["c1"]["rps"], 0),
    ("latency c=1 p50 (ms)", lambda r, d: r["c1"]["p50_us"] / 1000, 2),
    ("latency c=1 p99 (ms)", lambda r, d: r["c1"]["p99_us"] / 1000, 2),
    ("throughput c=32 (req/s)", lambda r, d: r["c32"]["rps"], 0),
    ("latency c=32 p50 (ms)", lambda r, d: r["c32"]["p50_us"] / 1000, 2),
    ("latency c=32 p99 (ms)", lambda r, d: r["c32"]["p99_us"] / 1000, 2),
    ("added latency over direct c=1 p50 (ms)", lambda r, d: _added(r, d, "p50_us"), 2),
    ("added latency over direct c=1 p99 (ms)", lambda r, d: _added(r, d, "p99_us"), 2),
    ("CPU s of the server per 1,000 requests", lambda r, d: r["soak"]["cpu_s_per_1k"], 3),
    ("RSS after soak 1 (MiB)", lambda r, d: r["soak"]["rss1_mib"], 1),
    ("RSS after soak 2 (MiB)", lambda r, d: r["soak"]["rss2_mib"], 1),
    ("RSS growth over soak 2 (MiB)", lambda r, d: _growth(r), 1, False),
    ("cold start: process start to first 200 (ms)", lambda r, d: _ms(r["cold_start_s"]), 0),
    ("stream: time to first byte p50 (ms)", lambda r, d: r["stream"]["ttfb_p50_ms"], 2),
    ("stream: first SSE event p50 (ms)", lambda r, d: r["stream"]["first_event_p50_ms"], 2),
    ("stream: worst extra delay of a chunk vs direct (ms)", lambda r, d: r["stream"]["worst_extra_ms"], 2),
    ("Firestore reads per 1,000 requests", lambda r, d: (r.get("store") or {}).get("reads"), 1),
    ("Firestore writes per 1,000 requests", lambda r, d: (r.get("store") or {}).get("writes"), 1),
    ("errors (non-2xx, socket) in all load phases", lambda r, d: _errors(r), 0, False),
]
ROW_LABELS = [r[0] for r in ROWS]


def grows(r) -> str:
    s = r["soak"]
    if s["rss1_mib"] is None:
        return "n/a"
    g = s["rss2_mib"] - s["rss1_mib"]
    return "yes" if g > max(2.0, 0.05 * s["rss1_mib"]) else "no"


def report(results: dict, notes: list[str], st: Settings, machine: dict) -> str:
    cols = [c for c in ("direct", "baseline", "proxy", "proxy-fs") if c in results]
    d = results["direct"]
    header = (
        ["metric", *cols]
        + (["proxy/baseline"] if {"proxy", "baseline"} <= set(cols) else [])
        + (["proxy-fs/baseline"] if {"proxy-fs", "baseline"} <= set(cols) else [])
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, fn, nd, *opt in ROWS:
        with_ratio = not opt or opt[0]
        vals = {}
        for c in cols:
            try:
                vals[c] = fn(results[c], d)
            except (KeyError, TypeError):
                vals[c] = None
        row = [label] + [fmt(vals[c], nd) for c in cols]
        if "proxy/baseline" in header:
            row.append(ratio(vals.get("proxy"), vals.get("baseline")) if with_ratio else "")
        if "proxy-fs/baseline" in header:
            row.append(ratio(vals.get("proxy-fs"), vals.get("baseline")) if with_ratio else "")
        lines.append("| " + " | ".join(row) + " |")
    grow_row = ["RSS keeps growing over soak 2?", *(grows(results[c]) for c in cols)]
    grow_row += [""] * (len(header) - len(grow_row))
    lines.append("| " + " | ".join(grow_row) + " |")
    soak = results["direct"]["soak"]
    mode = "smoke run (CI: checks the harness, the numbers mean little)" if st.smoke else "full run"
    head = [
        f"# gptload benchmark: {mode}",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['mem']}; Python {machine['python']}; "
        f"{machine['wrk']}; functions-framework {machine['ff']}, gunicorn {machine['gunicorn']}",
        f"- 1-minute load average before the run {machine.get('load_before', '?')}, after it "
        f"{os.getloadavg()[0]:.2f} (the bench itself keeps about 2 busy; more means other work shared the CPUs "
        "and the numbers are noisier)",
        f"- servers: functions-framework gunicorn gthread, WORKERS=1, THREADS={st.threads}; all on {HOST} "
        f"(load generator, fake upstream and server share the {machine['nproc']} CPUs)",
        f"- load: wrk, POST generateContent ({len(BODY)} B body); {st.phase_seconds}s per concurrency phase after "
        f"{st.warmup_seconds}s warm-up; soak 1 and soak 2 = {st.soak_requests:,} requests each at c={st.c_high} "
        f"(direct actually sent {soak['requests_1']:,} + {soak['requests_2']:,})",
        f"- streaming: {st.streams} sequential streamGenerateContent?alt=sse calls, fake sends {st.chunks} events "
        f"{st.interval_ms:g} ms apart",
        "- Firestore mode, where the time goes (profiles before/after log pages): bench/results/firestore.md",
        "",
    ]
    tail = ["", *[f"- {n}" for n in notes]] if notes else []
    return "\n".join(head + lines + tail) + "\n"


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass

    def version(mod):
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return "?"

    wrk_v = "wrk"
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        wrk_v = (out.stdout or out.stderr).splitlines()[0].split(" [")[0]
    except Exception:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem": mem,
        "python": platform.python_version(),
        "wrk": wrk_v,
        "ff": version("functions-framework"),
        "gunicorn": version("gunicorn"),
    }


# ----------------------------------------------------------------------------------------------- sanity
def sanity(results: dict, st: Settings, fake_stats: dict) -> list[str]:
    problems = []
    for name, r in results.items():
        for ph in ("c1", "c32"):
            if r[ph]["requests"] <= 0:
                problems.append(f"{name}: no request completed at {ph}")
            elif r[ph]["errors"] > 0.01 * r[ph]["requests"]:
                problems.append(f"{name}: {r[ph]['errors']} errors in {r[ph]['requests']} requests at {ph}")
        s = r["soak"]
        n = s["requests_1"] + s["requests_2"]
        if n < 1.8 * st.soak_requests:
            problems.append(f"{name}: soak sent only {n} requests")
        if s["errors"] > 0.01 * max(n, 1):
            problems.append(f"{name}: {s['errors']} errors in the soak")
        if r["stream"]["ok"] != r["stream"]["n"]:
            problems.append(f"{name}: only {r['stream']['ok']}/{r['stream']['n']} streams complete")
    if fake_stats.get("requests", 0) and fake_stats.get("with_key", 0) < fake_stats["requests"] * 0.9:
        problems.append(f"fake upstream saw requests without an API key: {fake_stats}")
    return problems


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--streams" or a.startswith("--streams=") for a in argv):  # many long streams: bench/streams.py
        import streams

        i = next(i for i, a in enumerate(argv) if a.startswith("--streams"))
        n = argv[i].partition("=")[2] or argv.pop(i + 1)
        return streams.main([n, *argv[:i], *argv[i + 1 :]])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few hundred requests per target; for CI")
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("THREADS", 8)),
        help="gthread THREADS for baseline and proxy (default 8 = functions-framework's 4 x CPUs here)",
    )
    ap.add_argument(
        "--targets",
        default="direct,baseline,proxy,proxy-fs",
        help="comma list of direct,baseline,proxy,proxy-fs (direct always runs: it is the reference)",
    )
    ap.add_argument("--no-firestore", action="store_true", help="skip the STORE=firestore runs")
    ap.add_argument(
        "--side-by-side",
        action="store_true",
        help="only the SQLite vs Firestore comparison of issue 16 (default out: bench/results/side-by-side.md)",
    )
    ap.add_argument("--no-side-by-side", action="store_true", help="full run without the side-by-side comparison")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the side-by-side comparison (default 6)")
    ap.add_argument("--cold-starts", type=int, default=5, help="cold starts per mode in the side-by-side (default 5)")
    ap.add_argument("--soak", type=int, default=None, help="requests in each of the two soaks (default 10,000)")
    ap.add_argument("--seconds", type=int, default=None, help="seconds of each concurrency phase (default 10)")
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary data and server logs (kept anyway on failure)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help="markdown report (default bench/results/latest.md, or bench/results/smoke.md with --smoke)",
    )
    args = ap.parse_args(argv)
    if args.out is None:
        name = "side-by-side.md" if args.side_by_side else "smoke.md" if args.smoke else "latest.md"
        args.out = str(RESULTS / name)

    if not shutil.which("wrk"):
        print("bench: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    st = Settings.make(args.smoke, args.threads)
    if args.soak:
        st.soak_requests = args.soak
    if args.side_by_side:  # many short rounds, not a few long ones: see side_by_side
        st.phase_seconds, st.warmup_seconds = 5, 1
    if args.seconds:
        st.phase_seconds = args.seconds
    wanted = set(args.targets.split(",")) | {"direct"}
    if args.no_firestore:
        wanted.discard("proxy-fs")
    notes: list[str] = []
    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="gptload-bench-"))
    logdir = work / "logs"
    logdir.mkdir()
    servers: list[Server] = []
    failed = False
    fake_stats: dict = {}
    side_md, side_raw = "", None
    t_begin = time.perf_counter()
    load_before = f"{os.getloadavg()[0]:.2f}"
    if args.side_by_side:
        return run_side_by_side(st, args, work, logdir, load_before)
    try:
        fake_port = free_port()
        fake_argv = [
            sys.executable,
            str(BENCH / "fake_upstream.py"),
            "--host",
            HOST,
            "--port",
            str(fake_port),
            "--chunks",
            str(st.chunks),
            "--interval-ms",
            str(st.interval_ms),
        ]
        fake = Server("fake-upstream", fake_argv, {}, ROOT, logdir)
        servers.append(fake)
        wait_until(lambda: http_call(fake_port, "GET", "/health", timeout=2)[0] == 200, 20, 0.02, fake)

        direct = Target("direct", fake_port, api_key="AIza" + "D" * 35, server=fake)
        results["direct"] = measure(direct, st, None)
        ref = stream_reference(results["direct"]["stream_raw"])

        if "baseline" in wanted:
            try:
                t = start_baseline(st, fake_port, logdir)
                servers.append(t.server)
                results["baseline"] = measure(t, st, ref)
                t.server.stop()
            except Exception as e:
                failed = True
                notes.append(f"baseline could not run: {e}".replace("\n", " / ")[:800])
                log(notes[-1])

        if "proxy" in wanted:
            try:
                t = start_proxy("proxy", st, {}, work / "data-sqlite", fake_port, logdir)
                servers.append(t.server)
                results["proxy"] = measure(t, st, ref)
                t.server.stop()
            except Exception as e:  # the proxy is what we are here for: a failure to run it fails the bench
                failed = True
                notes.append(f"proxy (embedded store) could not run: {e}".replace("\n", " / ")[:800])
                log(notes[-1])

        if "proxy-fs" in wanted:
            from firestore_run import FirestoreUnavailable, firestore_env

            try:
                with firestore_env(logdir) as (env_extra, counter):
                    t = start_proxy("proxy-fs", st, env_extra, work / "data-fs", fake_port, logdir)
                    servers.append(t.server)
                    try:
                        r = results["proxy-fs"] = measure(t, st, ref, store_counter=counter)
                    finally:
                        t.server.stop()  # SIGTERM: the proxy flushes its buffered counters and logs
                    tot = counter.snapshot()
                    a, n = r["store_at_start"], r["requests_total"]
                    r["store"] = {k: (tot[k] - a[k]) / n * 1000 for k in tot}
                    soak = r["store_soak"] or {}
                    notes.append(
                        f"Firestore per 1,000 requests: over the measured instance's life (first request to shutdown "
                        f"flush, {n:,} requests) {r['store']['reads']:.1f} reads, {r['store']['writes']:.1f} writes, "
                        f"{r['store']['rpcs']:.1f} RPCs (the table rows); during the soaks alone "
                        f"{soak.get('reads', 0):.1f} reads, {soak.get('writes', 0):.1f} writes. "
                        "Whole run incl. set-up: "
                        f"{tot['reads']:,} reads, {tot['writes']:,} writes, {tot['rpcs']:,} RPCs "
                        f"({', '.join(f'{k} {v:,}' for k, v in sorted(counter.by_method.items()))})"
                    )
            except FirestoreUnavailable as e:
                notes.append(f"Firestore run skipped: {e}")
                log(notes[-1])
            except Exception as e:
                notes.append(f"Firestore run failed: {e}".replace("\n", " / ")[:800])
                log(notes[-1])
                if os.environ.get("BENCH_REQUIRE_FIRESTORE"):
                    failed = True

        if not (st.smoke or args.no_side_by_side or args.no_firestore):
            try:
                side_md, side_raw = side_by_side(st, fake_port, logdir, work, args.rounds, args.cold_starts)
            except Exception as e:
                notes.append(f"side-by-side comparison failed: {e}".replace("\n", " / ")[:800])
                log(notes[-1])

        fake_stats = json.loads(http_call(fake_port, "GET", "/__stats")[1])
    finally:
        for s in reversed(servers):
            s.stop()

    problems = sanity(results, st, fake_stats)
    notes += [f"PROBLEM: {p}" for p in problems]
    rc = 1 if (failed or problems) else 0
    keep = rc or args.keep
    notes.append(
        f"fake upstream served {fake_stats.get('requests', 0):,} requests; bench took "
        f"{time.perf_counter() - t_begin:.0f}s" + (f"; server logs in {logdir}" if keep else "")
    )
    md = report(results, notes, st, {**machine_info(), "load_before": load_before})
    if side_md:
        md += "\n## Firestore vs SQLite, side by side\n\n" + side_md
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    raw = {k: {kk: vv for kk, vv in v.items() if kk != "stream_raw"} for k, v in results.items()}
    dump = {"settings": st.__dict__, "results": raw, "side_by_side": side_raw}
    out.with_suffix(".json").write_text(json.dumps(dump, indent=1))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return rc


WHERE_THE_TIME_GOES = (
    "Where the time goes in Firestore mode (the usage flush's steps, a cold start's stages, before and after the "
    "work of issue 16), and earlier runs of this comparison: [firestore.md](firestore.md).\n"
)


def run_side_by_side(st: Settings, args: argparse.Namespace, work: Path, logdir: Path, load_before: str) -> int:
    """``--side-by-side``: the fake upstream and the three servers of ``side_by_side`` only."""
    t_begin = time.perf_counter()
    fake = None
    rc = 0
    try:
        fake_port = free_port()
        argv = [sys.executable, str(BENCH / "fake_upstream.py"), "--host", HOST, "--port", str(fake_port)]
        fake = Server("fake-upstream", argv, {}, ROOT, logdir)
        wait_until(lambda: http_call(fake_port, "GET", "/health", timeout=2)[0] == 200, 20, 0.02, fake)
        side_md, side_raw = side_by_side(st, fake_port, logdir, work, args.rounds, args.cold_starts)
    except Exception as e:
        side_md, side_raw, rc = f"side-by-side comparison failed: {e}\n", None, 1
    finally:
        if fake is not None:
            fake.stop()
    m = machine_info()
    errors = sum(x[ph]["errors"] for v in (side_raw or {}).values() for x in v["rounds"] for ph in ("c1", "c32"))
    head = [
        "# gptload benchmark: Firestore vs SQLite side by side",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}; {m['nproc']} CPUs ({m['cpu']}); "
        f"Python {m['python']}; {m['wrk']}",
        f"- 1-minute load average before {load_before}, after {os.getloadavg()[0]:.2f}; "
        f"{st.warmup_seconds}s warm-up + {st.phase_seconds}s per phase; errors (non-2xx, socket) {errors}; "
        f"took {time.perf_counter() - t_begin:.0f}s" + (f"; logs in {logdir}" if rc or args.keep else ""),
        "",
    ]
    md = "\n".join(head) + side_md + "\n" + WHERE_THE_TIME_GOES
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"settings": st.__dict__, "side_by_side": side_raw}, indent=1))
    if not (rc or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    return rc or (1 if errors else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
