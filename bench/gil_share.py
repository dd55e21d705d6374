"""Who holds the GIL in a gptload server: reads a py-spy raw profile and prints the share of samples per activity.

    py-spy record --subprocesses --gil --threads -r 200 -f raw -d 10 -o gil.txt -p <pid of python main.py>
    python bench/gil_share.py gil.txt

``--gil`` keeps only samples of the thread holding the GIL, so the shares say which activity keeps the others
waiting: the usage flush, the pool's refresh (marker reads), request threads, or the rest (gunicorn's loop).
py-spy is a development tool (``pip install py-spy``), not a dependency of gptload.
"""

from __future__ import annotations

import collections
import re
import sys

ACTIVITIES = (
    ("usage flush (record_usage)", ("_flush_loop", "record_usage")),
    ("pool refresh / marker read", ("markers", "reload", "_refresh")),
    ("request threads", ("handle_request", "handler (main.py", "Router")),
)


def main(path: str) -> int:
    shares: collections.Counter[str] = collections.Counter()
    flush_frames: collections.Counter[str] = collections.Counter()
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        stack, count = line.rstrip().rsplit(" ", 1)
        if "Arbiter.run" in stack and "spawn_worker" not in stack:
            continue  # gunicorn's arbiter process, not the worker
        n = int(count)
        name = next((a for a, marks in ACTIVITIES if any(m in stack for m in marks)), "other (gunicorn loop, ...)")
        shares[name] += n
        if name == ACTIVITIES[0][0]:
            inner = next((f for f in reversed(stack.split(";")) if re.search(r"gptload|firestore|proto", f)), "?")
            flush_frames[re.sub(r":\d+\)", ")", inner)] += n
    total = sum(shares.values())
    print(f"samples holding the GIL: {total}")
    for name, n in shares.most_common():
        print(f"  {name}: {n} ({n / max(total, 1):.0%})")
    print("usage flush, innermost gptload/SDK frame:")
    for frame, n in flush_frames.most_common(6):
        print(f"  {n} {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
