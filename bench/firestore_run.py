"""Firestore side of the benchmark: start the emulator and count what the proxy asks of it.

The emulator keeps no read/write counters, so the proxy is pointed (FIRESTORE_EMULATOR_HOST) at a small gRPC
relay in this process that forwards every call to the emulator unchanged and counts, per call, what Firestore
would bill:
  reads  = documents returned by GetDocument / BatchGetDocuments (found or missing) / ListDocuments / RunQuery
           (a query that returns nothing still costs one read) and one per RunAggregationQuery answer;
  writes = writes in Commit / BatchWrite / Write-stream requests, plus Create/Update/DeleteDocument.
Listen (real-time listeners) is relayed but not counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
UNARY_STREAM = {"BatchGetDocuments", "RunQuery", "RunAggregationQuery"}
STREAM_STREAM = {"Write", "Listen"}
DROP_METADATA = {"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"}


class FirestoreUnavailable(Exception):
    """The Firestore run cannot happen here (no gcloud, no emulator, no grpc, or the proxy has no Firestore store)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class StoreCounter:
    def __init__(self, upstream: str):
        import grpc
        from google.cloud.firestore_v1.types import firestore as fs

        self.grpc = grpc
        self.fs = fs
        self.upstream = upstream  # the emulator: a second counter for a second instance can relay to it too
        self.emulator_pid = 0  # the emulator's process (firestore_env sets it): its CPU time is read from /proc
        self.lock = threading.Lock()
        self.counts = {"reads": 0, "writes": 0, "rpcs": 0}
        self.by_method: dict[str, int] = {}
        self.channel = grpc.insecure_channel(upstream)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        self.server.add_generic_rpc_handlers([self._handler()])
        self.port = self.server.add_insecure_port(f"{HOST}:0")

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.counts)

    def _add(self, method: str, reads: int = 0, writes: int = 0) -> None:
        with self.lock:
            self.counts["reads"] += reads
            self.counts["writes"] += writes

    def _count_request(self, name: str, req: bytes) -> None:
        fs = self.fs
        try:
            if name == "Commit":
                self._add(name, writes=len(fs.CommitRequest.deserialize(req).writes))
            elif name == "BatchWrite":
                self._add(name, writes=len(fs.BatchWriteRequest.deserialize(req).writes))
            elif name == "Write":
                self._add(name, writes=len(fs.WriteRequest.deserialize(req).writes))
            elif name in ("CreateDocument", "UpdateDocument", "DeleteDocument"):
                self._add(name, writes=1)
        except Exception:
            pass

    def _count_response(self, name: str, resp: bytes) -> int:
        fs = self.fs
        try:
            if name == "GetDocument":
                self._add(name, reads=1)
            elif name == "ListDocuments":
                self._add(name, reads=max(1, len(fs.ListDocumentsResponse.deserialize(resp).documents)))
            elif name == "BatchGetDocuments":
                r = fs.BatchGetDocumentsResponse.deserialize(resp)
                return 1 if (r.found or r.missing) else 0
            elif name == "RunQuery":
                return 1 if fs.RunQueryResponse.deserialize(resp).document else 0
            elif name == "RunAggregationQuery":
                return 1 if fs.RunAggregationQueryResponse.deserialize(resp).result else 0
        except Exception:
            pass
        return 0

    def _handler(self):
        grpc = self.grpc
        counter = self

        def md(ctx):
            return [(k, v) for k, v in ctx.invocation_metadata() if k not in DROP_METADATA and not k.startswith(":")]

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                method = details.method
                name = method.rsplit("/", 1)[-1]
                with counter.lock:
                    counter.counts["rpcs"] += 1
                    counter.by_method[name] = counter.by_method.get(name, 0) + 1

                def abort(ctx, e):
                    ctx.abort(e.code(), e.details() or "")

                if name in UNARY_STREAM:

                    def us(req, ctx):
                        n = 0
                        try:
                            for resp in counter.channel.unary_stream(method)(req, metadata=md(ctx)):
                                n += counter._count_response(name, resp)
                                yield resp
                        except grpc.RpcError as e:
                            abort(ctx, e)
                        finally:
                            counter._add(name, reads=max(n, 1) if name == "RunQuery" else n)

                    return grpc.unary_stream_rpc_method_handler(us)
                if name in STREAM_STREAM:

                    def ss(req_iter, ctx):
                        def reqs():
                            for r in req_iter:
                                counter._count_request(name, r)
                                yield r

                        try:
                            yield from counter.channel.stream_stream(method)(reqs(), metadata=md(ctx))
                        except grpc.RpcError as e:
                            abort(ctx, e)

                    return grpc.stream_stream_rpc_method_handler(ss)

                def uu(req, ctx):
                    counter._count_request(name, req)
                    try:
                        resp = counter.channel.unary_unary(method)(req, metadata=md(ctx))
                    except grpc.RpcError as e:
                        abort(ctx, e)
                    counter._count_response(name, resp)
                    return resp

                return grpc.unary_unary_rpc_method_handler(uu)

        return Handler()

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=1)
        self.channel.close()


def _warm_up(host: str) -> None:
    """One read with a long deadline: the emulator's first gRPC call can take seconds (JIT warm-up), longer than
    the proxy's 4 s RPC timeout on a busy machine."""
    from google.cloud import firestore

    old = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    try:
        client = firestore.Client(project="bench-warm-up")
        client.collection("warm").document("up").get(timeout=60)
        client.close()
    finally:
        if old is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = old


@contextlib.contextmanager
def firestore_env(logdir: Path):
    """Yield (env for the proxy, StoreCounter); raises FirestoreUnavailable when this machine cannot do it."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise FirestoreUnavailable("gcloud is not installed (the Firestore emulator comes with the Google Cloud CLI)")
    if not shutil.which("java"):
        raise FirestoreUnavailable("java is not installed (the Firestore emulator needs Java 11+)")
    if not (ROOT / "gptload" / "store" / "firestore" / "store.py").exists():
        raise FirestoreUnavailable("the proxy has no Firestore store yet (gptload/store/firestore/store.py)")
    try:
        import grpc  # noqa: F401
        from google.cloud.firestore_v1.types import firestore  # noqa: F401
    except ImportError as e:
        raise FirestoreUnavailable(f"python packages missing: {e}") from e

    emu_port = _free_port()
    log = open(logdir / "firestore-emulator.log", "ab")
    emu = subprocess.Popen(
        [gcloud, "emulators", "firestore", "start", f"--host-port={HOST}:{emu_port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    counter = None
    try:
        deadline = time.time() + 90
        while True:
            if emu.poll() is not None:
                raise FirestoreUnavailable(f"the emulator exited with {emu.returncode} (see {log.name})")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{emu_port}/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise FirestoreUnavailable(f"the emulator did not answer within 90 s (see {log.name})")
            time.sleep(0.2)
        _warm_up(f"{HOST}:{emu_port}")
        counter = StoreCounter(f"{HOST}:{emu_port}")
        counter.emulator_pid = emu.pid
        counter.start()
        env = {
            "STORE": "firestore",
            "VAULT": "store",
            "GOOGLE_CLOUD_PROJECT": "bench-project",
            "FIRESTORE_EMULATOR_HOST": f"{HOST}:{counter.port}",
            "ENCRYPTION_KEY": "bench-encryption-key-0123456789abcdef",
        }
        yield env, counter
    finally:
        if counter:
            counter.stop()
        if emu.poll() is None:
            try:
                os.killpg(emu.pid, signal.SIGTERM)
                emu.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(emu.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        log.close()
