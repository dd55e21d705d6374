"""Reading from an upstream that may be hostile or broken: never followed redirects, capped reads, capped decoding.

- ``UpstreamSession`` (``make_session``) sends a prepared request through the connection pool and returns the
  answer as it is: a 3xx is an answer, never followed (no redirect machinery, no cookie jar, no hooks).
- ``body_chunks`` yields the raw (still encoded) body in pieces of at most 64 KiB.
- ``Inflater`` decodes gzip/deflate with ``zlib``'s ``max_length``: never more output than asked for, whatever
  the input inflates to. ``read_capped`` / ``decode_capped`` build on it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from gptload.errors import GptloadError, UpstreamUnreachable

ERROR_BODY_CAP = 1024 * 1024  # decoded bytes of an error body (or a validation answer) that are kept
READ_SIZE = 64 * 1024  # the largest piece read from the socket or produced by a decoder at once


class UpstreamSession(requests.Session):
    """``send`` without requests' redirect, cookie and hook machinery: the answer is returned as the upstream gave
    it, 3xx included."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        resp = self.get_adapter(request.url or "").send(
            request,
            stream=True,
            timeout=kwargs.get("timeout"),
            verify=kwargs.get("verify", self.verify),
            cert=kwargs.get("cert", self.cert),
            proxies=kwargs.get("proxies") or {},
        )
        if not kwargs.get("stream", False):
            resp.content  # noqa: B018 - requests' own semantics for stream=False callers
        return resp


# -- reading ----------------------------------------------------------------------------------------------------
def body_chunks(resp: requests.Response, size: int = READ_SIZE) -> Iterator[bytes]:
    """The raw (still encoded) body as it arrives, in pieces of at most ``size`` bytes. Errors come out as
    ``requests`` exceptions."""
    raw = resp.raw
    while True:
        try:
            data = raw.read1(size, decode_content=False)
        except Exception as exc:
            new = _as_requests_error(exc)
            if new is exc:
                raise
            raise new from exc
        if not data:
            return
        yield data


def _as_requests_error(exc: Exception) -> Exception:
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, (Urllib3ReadTimeout, TimeoutError)):
        return requests.exceptions.ReadTimeout(str(exc))
    if isinstance(exc, ProtocolError):
        return requests.exceptions.ChunkedEncodingError(str(exc))
    if isinstance(exc, (Urllib3Error, OSError)):
        return requests.exceptions.ConnectionError(str(exc))
    return exc


class Inflater:
    """Incremental decoding of a Content-Encoding (identity, gzip, deflate) that never produces more than ``step``
    bytes at a time, however much the input inflates. ``supported`` is False for other encodings."""

    def __init__(self, content_encoding: str) -> None:
        encoding = content_encoding.strip().lower()
        self.supported = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        self.decodes = encoding in ("gzip", "x-gzip", "deflate")
        self._gzip = encoding in ("gzip", "x-gzip")
        self._deflate_unsure = encoding == "deflate"  # zlib-wrapped as the RFC says, or raw as some servers send
        self._z = self._new() if self.decodes else None
        self._done = False

    def _new(self) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)

    def pieces(self, data: bytes, step: int = READ_SIZE) -> Iterator[bytes]:
        """Decoded pieces of ``data`` (each at most ``step`` bytes), in order; pull only as many as you need."""
        if self._z is None:
            for i in range(0, len(data), step):
                yield data[i : i + step]
            return
        pending = data
        while not self._done:
            before = pending
            try:
                out = self._z.decompress(pending, step)
            except zlib.error as exc:
                if self._deflate_unsure:
                    self._deflate_unsure = False
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise requests.exceptions.ContentDecodingError(f"cannot decode the upstream body: {exc}") from exc
            self._deflate_unsure = False
            pending = self._z.unconsumed_tail
            if out:
                yield out
            if self._z.eof:
                rest = self._z.unused_data
                if self._gzip and rest.lstrip(b"\0"):  # another gzip member follows
                    self._z, pending = self._new(), rest
                    continue
                self._done = True  # anything after the end of the stream is ignored
            elif (not pending and len(out) < step) or (not out and pending == before):
                return  # all input consumed and no output held back (or no progress): wait for more input


def read_capped(resp: requests.Response, cap: int = ERROR_BODY_CAP) -> bytes:
    """The decoded body, cut after ``cap`` bytes; the rest is never read (close the response afterwards, which
    closes its connection). A body in an encoding that cannot be decoded is returned raw, cut the same way."""
    inflater = Inflater(resp.headers.get("content-encoding", ""))
    out = bytearray()
    read = 0
    chunks = body_chunks(resp)
    try:
        for chunk in chunks:
            read += len(chunk)
            if not inflater.supported:
                out += chunk[: cap - len(out)]
            else:
                for piece in inflater.pieces(chunk, min(READ_SIZE, cap - len(out))):
                    out += piece[: cap - len(out)]
                    if len(out) >= cap:
                        break
            if len(out) >= cap or read >= 2 * cap + READ_SIZE:  # input that decodes to (almost) nothing
                break
    finally:
        chunks.close()
    return bytes(out)


def read_head(chunks: Iterator[bytes], cap: int) -> tuple[bytes, bool]:
    """Up to about ``cap`` raw bytes from ``chunks``; True when that was the whole body."""
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if len(head) > cap:
            return bytes(head), False
    return bytes(head), True


def decode_capped(data: bytes, content_encoding: str, cap: int) -> bytes:
    """``data`` decoded when that takes at most ``cap`` bytes; b"" when it would take more or cannot be decoded."""
    inflater = Inflater(content_encoding)
    if not inflater.supported:
        return b""
    out = bytearray()
    try:
        for piece in inflater.pieces(data):
            out += piece
            if len(out) > cap:
                return b""
    except requests.exceptions.ContentDecodingError:
        return b""
    return bytes(out)


def as_gptload_error(exc: Exception) -> GptloadError:
    """What the client gets when the upstream failed after its headers but before a byte was relayed."""
    return UpstreamUnreachable(f"the upstream answer broke off before its first byte: {type(exc).__name__}")
