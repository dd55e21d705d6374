"""How long a usage flush keeps request threads from running: the Firestore adapter's ``record_usage`` of a
batch of logged events, measured in process against the emulator.

    python bench/flush_probe.py [--events 500] [--flushes 10]

Uses ``FIRESTORE_EMULATOR_HOST`` when set, else starts an emulator (bench/firestore_run.py). For each flush it
reports the CPU time of the flushing thread (what it costs the process) and its wall time; meanwhile a probe thread
stands in for a request thread: it sleeps 0.5 ms in a loop and records how late it wakes up. A flush that holds the
GIL shows as probe delays; the same probe without flushes gives the machine's own noise. Less sensitive to a busy
machine than wrk's percentiles, so before/after comparisons hold on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

PROBE_SLEEP = 0.0005


def events(n: int, base: float) -> list:
    from gptload.models import UsageEvent

    return [
        UsageEvent(
            group="bench",
            key_id=f"k{i % 20:04d}",
            at=base + i * 0.002,
            success=True,
            status_code=200,
            model="gemini-2.5-flash",
            method="POST",
            path="/v1beta/models/gemini-2.5-flash:generateContent",
            duration_ms=1,
            key_masked="AIza...abcd",
            source_ip="127.0.0.1",
            user_agent="wrk/4.1.0",
            upstream="http://127.0.0.1:18080",
            prompt_tokens=5,
            candidates_tokens=7,
            total_tokens=12,
            id=f"{int(base):x}{i:06x}",
        )
        for i in range(n)
    ]


class Probe(threading.Thread):
    """Sleeps PROBE_SLEEP in a loop; ``lateness`` collects how late each wake-up was (seconds)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lateness: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(PROBE_SLEEP)
            self.lateness.append(time.perf_counter() - t - PROBE_SLEEP)


def probed(fn) -> list[float]:
    probe = Probe()
    probe.start()
    try:
        fn()
    finally:
        probe.stop.set()
        probe.join()
    return probe.lateness


def summary(late: list[float]) -> str:
    ms = sorted(x * 1000 for x in late)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms over {len(ms):,} wake-ups"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500, help="logged events per flush (default 500)")
    ap.add_argument("--flushes", type=int, default=10)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    with contextlib.ExitStack() as stack:
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            from firestore_run import firestore_env

            env, _counter = stack.enter_context(firestore_env(Path(tempfile.mkdtemp(prefix="gptload-probe-"))))
            os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
        from gptload.store.firestore import FirestoreStore

        store = FirestoreStore(project=f"flush-probe-{os.getpid()}")
        store.record_usage(events(args.events, time.time()))  # channel and emulator warm
        cpu: list[float] = []
        wall: list[float] = []

        def flushes() -> None:
            for r in range(args.flushes):
                batch = events(args.events, time.time() + r)
                c0, w0 = time.thread_time(), time.perf_counter()
                store.record_usage(batch)
                cpu.append((time.thread_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
                time.sleep(0.05)

        during = probed(flushes)
        idle_for = sum(wall) / 1000 + 0.05 * args.flushes
        idle = probed(lambda: time.sleep(idle_for))
        store.close()
    print(f"record_usage of {args.events} logged events, {args.flushes} flushes:")
    print(f"- CPU of the flushing thread: median {statistics.median(cpu):.1f} ms, max {max(cpu):.1f} ms")
    print(f"- wall: median {statistics.median(wall):.1f} ms, max {max(wall):.1f} ms")
    print(f"- a thread waking every 0.5 ms meanwhile, lateness: {summary(during)}")
    print(f"- the same thread without flushes (machine noise): {summary(idle)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
