"""Fast fake Gemini upstream for the benchmark: raw asyncio streams, HTTP/1.1 keep-alive.

    python bench/fake_upstream.py --port 18080 [--chunks 10] [--interval-ms 50]

- POST .../models/<m>:generateContent          -> 200, a fixed JSON body (Content-Length)
- POST .../models/<m>:streamGenerateContent     -> 200 text/event-stream, chunked, --chunks SSE events
                                                   one every --interval-ms (the first one at once), each
                                                   stamped with its send time (``"sentAt"``: time.monotonic(),
                                                   system-wide on Linux; bench/streams.py measures relay delay)
- GET  /health                                   -> 200 {"status": "ok"}
- GET  /__stats                                  -> 200 {"requests": N, "with_key": N, "streams": N}
- anything else                                  -> 404 in Google's error envelope

A request without x-goog-api-key (or ?key=) is answered 403 like Google would, so a proxy that forgets
to attach the real key shows up as errors, not as a fast benchmark. It is one process and one thread;
it answers a few thousand requests per second on one core, far more than the servers under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

GENERATE_BODY = json.dumps(
    {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hello from the fake upstream."}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash",
    },
    separators=(",", ":"),
).encode()

STATS = {"requests": 0, "with_key": 0, "streams": 0}


def sse_event(i: int, last: bool) -> bytes:
    ev = {
        "candidates": [
            {
                "content": {"parts": [{"text": f"chunk {i} "}], "role": "model"},
                **({"finishReason": "STOP"} if last else {}),
                "index": 0,
            }
        ],
        "modelVersion": "gemini-2.5-flash",
        "sentAt": round(time.monotonic(), 6),
    }
    return b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\r\n\r\n"


def response(status: str, body: bytes, ctype: bytes = b"application/json; charset=UTF-8", close: bool = False) -> bytes:
    head = (
        b"HTTP/1.1 " + status.encode() + b"\r\n"
        b"Content-Type: " + ctype + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    )
    return head + body


def err(code: int, status: str, msg: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": msg, "status": status}}).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                return
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            # body: Content-Length or chunked
            if "content-length" in headers:
                n = int(headers["content-length"])
                if n:
                    await reader.readexactly(n)
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            STATS["requests"] += 1
            path, _, query = target.partition("?")
            has_key = bool(headers.get("x-goog-api-key")) or "key=" in query
            if has_key:
                STATS["with_key"] += 1

            if method == "GET" and path == "/health":
                writer.write(response("200 OK", b'{"status":"ok"}', close=close))
            elif method == "GET" and path == "/__stats":
                writer.write(response("200 OK", json.dumps(STATS).encode(), close=close))
            elif ":streamGenerateContent" in path or ":generateContent" in path:
                if not has_key:
                    body = err(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
                    writer.write(response("403 Forbidden", body, close=close))
                elif ":streamGenerateContent" in path:
                    STATS["streams"] += 1
                    writer.write(
                        b"HTTP/1.1 200 OK\r\n"
                        b"Content-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
                    )
                    for i in range(args.chunks):
                        if i:
                            await asyncio.sleep(args.interval_ms / 1000.0)
                        data = sse_event(i, i == args.chunks - 1)
                        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(response("200 OK", GENERATE_BODY, close=close))
            else:
                writer.write(response("404 Not Found", err(404, "NOT_FOUND", "not found"), close=close))
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main_async(args) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), host=args.host, port=args.port, backlog=1024, reuse_address=True
    )
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(f"fake upstream listening on {args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--chunks", type=int, default=10, help="SSE events per streamed answer")
    p.add_argument("--interval-ms", type=float, default=50.0, help="pause between SSE events")
    args = p.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
