"""CPU cost of gptload's own code on the hot path, isolated from the server and the network.

    python bench/hotpath.py [--requests 20000] [--profile] [--keys legacy|access|both]

Drives ``Router`` in process (a werkzeug environ per request, as gunicorn would pass it) against an in-memory
upstream adapter mounted on the real ``requests.Session``, so what is measured is routing, authentication,
key selection, header rewriting, the relay, usage events and requests' own client overhead - no sockets, no
gunicorn, no Flask. Prints microseconds of CPU per proxied request, and with ``--profile`` the top functions
by own time (cProfile). Deterministic enough to compare before/after a change on a noisy machine; the wall-clock
benchmark is ``bench/run.py``.

``--keys both`` (the default) measures the same requests authenticated with a legacy proxy key and with an access
key that has every limit set (scope checks, the rate window, the daily budget, and its helper thread's heartbeats
and usage readings, which run in this process and count), in alternating rounds (A B, B A, ...) so that a noisy
machine affects both alike, and prints the access key's extra CPU per request in percent.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import requests
from requests.adapters import BaseAdapter
from urllib3.response import HTTPResponse
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptload.app import build_services  # noqa: E402
from gptload.config import Config  # noqa: E402
from gptload.proxy.upstream import make_session  # noqa: E402
from gptload.web.router import Router  # noqa: E402
from tests.fakes.fake_gemini import make_key  # noqa: E402

BODY = b'{"contents":[{"role":"user","parts":[{"text":"Say hello in five words."}]}]}'
ANSWER = (
    b'{"candidates":[{"content":{"parts":[{"text":"Hello there, how are you?"}],"role":"model"},'
    b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":7,'
    b'"totalTokenCount":14},"modelVersion":"gemini-2.5-flash"}'
)


class CannedAdapter(BaseAdapter):
    """Answers every request with the same generateContent body, as a keep-alive upstream would."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        raw = HTTPResponse(
            body=io.BytesIO(ANSWER),
            headers={"Content-Type": "application/json; charset=UTF-8", "Content-Length": str(len(ANSWER))},
            status=200,
            preload_content=False,
            decode_content=False,
        )
        response = requests.Response()
        response.status_code = 200
        response.headers = requests.structures.CaseInsensitiveDict(raw.headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keys", choices=("legacy", "access", "both"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        session = make_session(8)
        session.mount("http://upstream.invalid", CannedAdapter())
        config = Config.from_env({"AUTH_KEY": "hotpath-admin-key", "DATA_DIR": data})
        services = build_services(config, session=session)
        router = Router(services)
        admin = {"Authorization": "Bearer hotpath-admin-key"}
        for path, payload in (
            (
                "/api/groups",
                {
                    "name": "bench",
                    "upstreams": [{"url": "http://upstream.invalid"}],
                    "proxy_keys": ["bench-proxy-key-123"],
                },
            ),
            ("/api/groups/bench/keys", {"keys": "\n".join(make_key(i) for i in range(20))}),
        ):
            env = EnvironBuilder(path=path, method="POST", json=payload, headers=admin).get_environ()
            assert router(Request(env)).status_code in (200, 201)
        limited = {
            "name": "bench",
            "groups": ["bench"],
            "models": ["gemini-2.5-*"],
            "rpm_limit": 10**9,
            "daily_request_limit": 10**9,
            "daily_token_limit": 10**12,
        }
        env = EnvironBuilder(path="/api/access-keys", method="POST", json=limited, headers=admin).get_environ()
        access_key = json.loads(router(Request(env)).get_data())["key"]
        secrets = {"legacy": "bench-proxy-key-123", "access": access_key}
        modes = ["legacy", "access"] if args.keys == "both" else [args.keys]

        def environ_for(secret: str) -> dict:
            return EnvironBuilder(
                path="/proxy/bench/v1beta/models/gemini-2.5-flash:generateContent",
                method="POST",
                data=BODY,
                headers={
                    "Content-Type": "application/json",
                    "x-goog-api-key": secret,
                    "User-Agent": "hotpath",
                    "Accept-Encoding": "gzip, deflate",
                },
            ).get_environ()

        environs = {mode: environ_for(secrets[mode]) for mode in modes}

        def one(environ: dict) -> None:
            env = dict(environ)
            env["wsgi.input"] = io.BytesIO(BODY)
            response = router(Request(env))
            body = b"".join(response.response)
            response.close()
            assert response.status_code == 200 and body == ANSWER

        for mode in modes:
            for _ in range(500):  # warm up
                one(environs[mode])
        profiler = cProfile.Profile() if args.profile else None
        cpu = dict.fromkeys(modes, 0.0)
        rounds = 40
        if profiler:
            profiler.enable()
        for number in range(rounds):
            for mode in modes if number % 2 == 0 else modes[::-1]:  # A B, B A, ...: order effects cancel out
                start = time.process_time()
                for _ in range(args.requests // rounds):
                    one(environs[mode])
                cpu[mode] += time.process_time() - start
        if profiler:
            profiler.disable()
        services.shutdown()
    n = args.requests // rounds * rounds
    for mode in modes:
        print(f"{n} proxied requests in process ({mode} key): {cpu[mode] * 1e6 / n:.1f} us CPU per request")
    if len(modes) == 2:
        print(f"access key vs legacy proxy key: {100 * (cpu['access'] / cpu['legacy'] - 1):+.1f} % CPU per request")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
