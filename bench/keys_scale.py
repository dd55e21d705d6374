"""How the keys API behaves with a big group: import N keys (a task), list a page, search, sort, filter, export.

    python bench/keys_scale.py                      # 100,000 keys, SQLite and the Firestore emulator
    python bench/keys_scale.py --keys 20000 --stores sqlite

The admin API runs in this process (the real Router over werkzeug's test client: no sockets, no mocks), on a
fresh store. On Firestore it goes through ``bench/firestore_run.py``'s counting relay, so every step also reports
the document reads and writes Firestore would bill. Each read-only step is timed as the median of ``--repeat``
calls (the first, cold call is shown apart). It prints a markdown table and writes it to
``bench/results/keys_scale.md``; no threshold is checked. Numbers depend on the machine and its load: the header
records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from werkzeug.test import Client  # noqa: E402
from werkzeug.wrappers import Request  # noqa: E402

from gptload.app import build_services  # noqa: E402
from gptload.config import Config  # noqa: E402
from gptload.web.router import Router  # noqa: E402
from tests.fakes.fake_gemini import make_key  # noqa: E402

AUTH_KEY = "bench-admin-key-0123"
HEADERS = {"Authorization": f"Bearer {AUTH_KEY}"}
GROUP = "scale"


class Api:
    def __init__(self, env: dict[str, str]) -> None:
        self.services = build_services(Config.from_env(env))
        router = Router(self.services)
        self.client = Client(lambda environ, start: router(Request(environ))(environ, start))

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        r = self.client.open(path, method=method, headers=HEADERS, json=body, query_string=query or None)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.get_data(as_text=True)[:300]}")
        return r

    def close(self) -> None:
        self.services.shutdown()


@contextmanager
def counted_firestore(logdir: Path) -> Iterator[tuple[dict[str, str], Any]]:
    """A running emulator (``FIRESTORE_EMULATOR_HOST``, a fresh project per run) behind the counting relay, or a
    new emulator started by ``firestore_run.firestore_env``."""
    from firestore_run import StoreCounter, firestore_env

    running = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not running:
        with firestore_env(logdir) as pair:
            yield pair
        return
    counter = StoreCounter(running)
    counter.start()
    try:
        yield (
            {
                "STORE": "firestore",
                "VAULT": "store",
                "GOOGLE_CLOUD_PROJECT": f"bench-keys-{int(time.time())}",
                "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{counter.port}",
            },
            counter,
        )
    finally:
        counter.stop()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_store(store: str, n: int, repeat: int, env: dict[str, str], counter: Any) -> list[tuple[str, str, str]]:
    """The rows (step, time, store cost) of one store."""
    deadline = time.monotonic() + 90
    while True:  # a freshly started emulator may need a while before its first answer
        try:
            api = Api(env)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    rows: list[tuple[str, str, str]] = []

    def cost(before: dict | None) -> str:
        if counter is None or before is None:
            return "-"
        now = counter.snapshot()
        return f"{now['reads'] - before['reads']:,} reads, {now['writes'] - before['writes']:,} writes"

    def snap() -> dict | None:
        return counter.snapshot() if counter is not None else None

    try:
        api.call("POST", "/api/groups", {"name": GROUP, "upstreams": [{"url": "http://127.0.0.1:9"}]})
        keys = [make_key(10_000_000 + i) for i in range(n)]
        text = "\n".join(keys)
        before, t0 = snap(), time.perf_counter()
        r = api.call("POST", f"/api/groups/{GROUP}/keys", {"keys": text})
        task = r.get_json().get("task")
        polls = 0
        while task is not None and task["status"] == "running":
            time.sleep(0.2)
            polls += 1
            task = api.call("GET", f"/api/tasks/{task['id']}").get_json()["task"]
        took = time.perf_counter() - t0
        result = task or r.get_json()
        if result.get("added") != n:
            raise RuntimeError(f"import added {result.get('added')} of {n}: {result}")
        rows.append((f"import {n:,} keys (a task, {polls} progress polls)", f"{took:.1f} s", cost(before)))
        print(f"   {rows[-1]}", file=sys.stderr, flush=True)
        del text

        def timed(label: str, method: str, path: str, body: Any = None, **query: Any) -> Any:
            before, t0 = snap(), time.perf_counter()
            first = api.call(method, path, body, **query)
            cold = time.perf_counter() - t0
            cold_cost = cost(before)
            times = []
            before = snap()
            for _ in range(repeat):
                t0 = time.perf_counter()
                api.call(method, path, body, **query)
                times.append(time.perf_counter() - t0)
            warm = statistics.median(times) * 1000
            each = "-"
            if counter is not None and before is not None:
                now = counter.snapshot()
                each = f"{(now['reads'] - before['reads']) / repeat:,.0f} reads"
            rows.append((label, f"first {cold * 1000:,.0f} ms, then {warm:,.0f} ms", f"first {cold_cost}; then {each}"))
            print(f"   {rows[-1]}", file=sys.stderr, flush=True)
            return first

        path = f"/api/groups/{GROUP}/keys"
        body = timed("list page 1 (100 keys)", "GET", path, page_size=100).get_json()
        assert body["total"] == n, body["total"]
        timed(f"list the last page ({n // 100:,})", "GET", path, page=n // 100, page_size=100)
        timed("sort by requests, desc", "GET", path, sort="requests", order="desc", page_size=100)
        timed("filter status=invalid", "GET", path, status="invalid", page_size=100)
        found = timed("search a tail (4 chars)", "GET", path, q=keys[n // 2][-4:], page_size=100).get_json()
        assert any(k["key"].endswith(keys[n // 2][-4:]) for k in found["keys"])
        one = timed("search a full pasted key", "GET", path, q=keys[n - 7], page_size=100).get_json()
        assert one["total"] == 1, one
        timed("group summary (key counts)", "GET", f"/api/groups/{GROUP}")
        before, t0 = snap(), time.perf_counter()
        exported = api.call("GET", f"{path}/export", status="all").get_data()
        rows.append(
            (f"export all ({len(exported) / 1e6:.1f} MB)", f"{(time.perf_counter() - t0) * 1000:,.0f} ms", cost(before))
        )
        assert exported.count(b"\n") == n
        ids = [k["id"] for k in body["keys"]]
        before, t0 = snap(), time.perf_counter()
        api.call("POST", f"{path}/disable", {"ids": ids})
        rows.append(("disable 100 keys (bulk)", f"{(time.perf_counter() - t0) * 1000:,.0f} ms", cost(before)))
        rows.append(("peak RSS of this process", f"{rss_mib():,.0f} MiB", "-"))
    finally:
        api.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stores", default="sqlite,firestore")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "keys_scale.md"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    sections: list[tuple[str, list[tuple[str, str, str]]]] = []
    failed = False
    for store in args.stores.split(","):
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            env = {
                "AUTH_KEY": AUTH_KEY,
                "DATA_DIR": tmp,
                "MAINTENANCE_INTERVAL_SECONDS": "0",
                "ENCRYPTION_KEY": "bench-encryption-key-0123456789abcdef",
            }
            counter = None
            print(f"-- {store}: {args.keys:,} keys", file=sys.stderr, flush=True)
            try:
                if store == "firestore":
                    extra, counter = stack.enter_context(counted_firestore(Path(tmp)))
                    env.update(extra)
                    os.environ["FIRESTORE_EMULATOR_HOST"] = extra["FIRESTORE_EMULATOR_HOST"]
                rows = run_store(store, args.keys, args.repeat, env, counter)
            except Exception as exc:  # the report says what failed, and the exit code too
                failed = True
                rows = [("failed", f"{type(exc).__name__}: {str(exc)[:300]}".replace("|", "/"), "-")]
            sections.append((store, rows))
            print("\n".join(f"   {a}: {b} ({c})" for a, b, c in rows), file=sys.stderr, flush=True)
    lines = [
        f"# keys at scale: {args.keys:,} keys in one group",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average before: {load:.2f}, after: "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs). Each store runs in a fresh process state; the Firestore "
        "column is the emulator (local, no network), with the document reads and writes Firestore would bill.",
        "",
    ]
    for store, rows in sections:
        lines += [f"## {store}", "", "| step | time | store cost |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        lines.append("")
    report = "\n".join(lines)
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    Path(args.out).with_suffix(".json").write_text(json.dumps(dict(sections), indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
