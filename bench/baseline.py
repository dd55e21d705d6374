"""Baseline for the benchmark: a bare functions-framework + requests pass-through, no key pool. Run it like the proxy:
`UPSTREAM=http://127.0.0.1:P THREADS=n functions-framework --target handler --source bench/baseline.py`"""

import os

import flask
import requests

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:18080")
KEY = os.environ.get("BASELINE_KEY", "AIza" + "B" * 35)
session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=int(os.environ.get("THREADS", 8))))


def handler(request):
    up = session.post(
        UPSTREAM + request.full_path.rstrip("?"),
        data=request.get_data(),
        stream=True,
        headers={"content-type": request.content_type or "application/json", "x-goog-api-key": KEY},
    )
    return flask.Response(
        up.iter_content(chunk_size=None), status=up.status_code, content_type=up.headers.get("content-type")
    )
