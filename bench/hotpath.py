"""CPU cost of gptload's own code on the hot path, isolated from the server and the network.

    python bench/hotpath.py [--requests 20000] [--case plain|rules|aggregate|access|both|keys|all] [--profile]

Drives ``Router`` in process (a werkzeug environ per request, as gunicorn would pass it) against an in-memory
upstream adapter mounted on the real ``requests.Session``, so what is measured is routing, authentication,
key selection, header rewriting, the relay, usage events and requests' own client overhead - no sockets, no
gunicorn, no Flask. Prints microseconds of CPU per proxied request, and with ``--profile`` the top functions
by own time (cProfile). Deterministic enough to compare before/after a change on a noisy machine; the wall-clock
benchmark is ``bench/run.py``.

Two cases, measured in alternating blocks so that machine noise hits both alike:

- ``plain``: group ``bench``, no request rules (the hot path of most groups);
- ``rules``: group ``rules`` with every request rule at once: a model redirect (the client asks for ``fast``,
  ``gemini-2.5-flash`` goes upstream), ``param_overrides`` deep-merged into the body, and two header rules (one
  with variables); the upstream check asserts the merged body and the headers arrived;
- ``aggregate``: through an aggregate of two plain groups;
- ``access``: group ``bench`` with an access key that has every limit set (scope checks, the rate window, the daily
  budget, and its helper thread's heartbeats and usage readings, which run in this process and count) instead of
  the legacy proxy key; ``--case keys`` measures ``plain`` and ``access`` only and prints the difference (target:
  under 5 % more CPU per request). Blocks alternate in order (A B, B A, ...) so order effects cancel out.
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


RULES = {
    "model_redirect_rules": {"fast": "gemini-2.5-flash"},
    "param_overrides": {"generationConfig": {"temperature": 0.2, "maxOutputTokens": 256}},
    "header_rules": [
        {"key": "X-Caller", "value": "${CLIENT_IP}/${GROUP_NAME}/${TIMESTAMP_MS}", "action": "set"},
        {"key": "User-Agent", "action": "remove"},
    ],
}


class CheckingAdapter(CannedAdapter):
    """The canned answer, after checking that the rules group's request arrived rewritten."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        assert request.url.endswith("/models/gemini-2.5-flash:generateContent")
        assert b'"temperature":0.2' in request.body and "X-Caller" in request.headers
        assert "User-Agent" not in request.headers
        return super().send(request, stream, timeout, verify, cert, proxies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument(
        "--case", choices=("plain", "rules", "aggregate", "access", "both", "keys", "all"), default="all"
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        session = make_session(8)
        session.mount("http://upstream.invalid", CannedAdapter())
        session.mount("http://rules-upstream.invalid", CheckingAdapter())
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
            (
                "/api/groups",
                {
                    "name": "rules",
                    "upstreams": [{"url": "http://rules-upstream.invalid"}],
                    "proxy_keys": ["bench-proxy-key-123"],
                    **RULES,
                },
            ),
            ("/api/groups/rules/keys", {"keys": "\n".join(make_key(i) for i in range(20))}),
            (  # an aggregate of the plain group and a second one like it, weights 1/1
                "/api/groups",
                {"name": "bench2", "upstreams": [{"url": "http://upstream.invalid"}], "proxy_keys": []},
            ),
            ("/api/groups/bench2/keys", {"keys": "\n".join(make_key(100 + i) for i in range(20))}),
            (
                "/api/groups",
                {
                    "name": "agg",
                    "group_type": "aggregate",
                    "sub_groups": [{"name": "bench", "weight": 1}, {"name": "bench2", "weight": 1}],
                    "proxy_keys": ["bench-proxy-key-123"],
                },
            ),
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
        headers = {
            "Content-Type": "application/json",
            "x-goog-api-key": "bench-proxy-key-123",
            "User-Agent": "hotpath",
            "Accept-Encoding": "gzip, deflate",
        }
        environs = {
            "plain": EnvironBuilder(
                path="/proxy/bench/v1beta/models/gemini-2.5-flash:generateContent",
                method="POST",
                data=BODY,
                headers=headers,
            ).get_environ(),
            "rules": EnvironBuilder(
                path="/proxy/rules/v1beta/models/fast:generateContent", method="POST", data=BODY, headers=headers
            ).get_environ(),
            "aggregate": EnvironBuilder(
                path="/proxy/agg/v1beta/models/gemini-2.5-flash:generateContent",
                method="POST",
                data=BODY,
                headers=headers,
            ).get_environ(),
            "access": EnvironBuilder(
                path="/proxy/bench/v1beta/models/gemini-2.5-flash:generateContent",
                method="POST",
                data=BODY,
                headers={**headers, "x-goog-api-key": access_key},
            ).get_environ(),
        }

        def one(case: str) -> None:
            env = dict(environs[case])
            env["wsgi.input"] = io.BytesIO(BODY)
            response = router(Request(env))
            body = b"".join(response.response)
            response.close()
            assert response.status_code == 200 and body == ANSWER

        cases = {
            "both": ("plain", "rules"),
            "keys": ("plain", "access"),
            "all": ("plain", "rules", "aggregate", "access"),
        }.get(args.case, (args.case,))
        for case in cases:
            for _ in range(500):  # warm up
                one(case)
        profiler = cProfile.Profile() if args.profile else None
        cpu = dict.fromkeys(cases, 0.0)
        block = 1000
        for done in range(0, args.requests, block):
            for case in cases if done // block % 2 == 0 else cases[::-1]:
                n = min(block, args.requests - done)
                if profiler:
                    profiler.enable()
                start = time.process_time()
                for _ in range(n):
                    one(case)
                cpu[case] += time.process_time() - start
                if profiler:
                    profiler.disable()
        services.shutdown()
    for case in cases:
        what = {
            "plain": "no rules",
            "rules": "redirect + overrides + 2 header rules",
            "aggregate": "through an aggregate of 2 plain groups",
            "access": "no rules, an access key with every limit instead of the proxy key",
        }[case]
        per_request = cpu[case] * 1e6 / args.requests
        print(f"{case} ({what}): {args.requests} proxied requests in process: {per_request:.1f} us CPU per request")
    if "plain" in cases and "access" in cases:
        print(f"access key vs legacy proxy key: {100 * (cpu['access'] / cpu['plain'] - 1):+.1f} % CPU per request")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
