"""Firestore ``Write`` messages built directly on the SDK's C-implemented protobuf classes, for the usage flush.

Why: the SDK's ``batch.set`` converts every value through proto-plus wrappers in Python (about 0.3 ms per log
row document, plus a quadratic update-mask computation for merged transforms), and a flush does it in one
thread while request threads wait for the GIL. Building the same ``Write`` messages on the raw protobuf classes
costs a few microseconds per value. The messages are exactly what ``set()``, ``set(merge=True)`` with
``Increment``/``Maximum`` and ``create()`` produce (``tests/unit/test_firestore_writes.py`` compares them).

Created by the store after the SDK import (the SDK is never imported at module import).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class WriteEncoder:
    """Raw ``google.firestore.v1.Write`` messages; ``path`` is a document's full resource name."""

    def __init__(self) -> None:
        from google.cloud.firestore_v1.field_path import FieldPath
        from google.cloud.firestore_v1.types import common, document, write

        self._write = write.Write.pb()
        self._wrap = write.Write.wrap
        self._doc = document.Document.pb()
        self._value = document.Value.pb()
        self._array = document.ArrayValue.pb()
        self._map = document.MapValue.pb()
        self._mask = common.DocumentMask.pb()
        self._precondition = common.Precondition.pb()
        self._transform = write.DocumentTransform.FieldTransform.pb()
        self._field_path = FieldPath

    def value(self, v: Any) -> Any:
        """One Firestore value (None, bool, int, float, str, bytes, datetime, list, dict), as the SDK encodes it."""
        V = self._value
        if v is None:
            return V(null_value=0)
        if isinstance(v, bool):
            return V(boolean_value=v)
        if isinstance(v, int):
            return V(integer_value=v)
        if isinstance(v, float):
            return V(double_value=v)
        if isinstance(v, str):
            return V(string_value=v)
        if isinstance(v, bytes):
            return V(bytes_value=v)
        if isinstance(v, datetime):
            out = V()
            out.timestamp_value.FromDatetime(v)
            return out
        if isinstance(v, list | tuple):
            return V(array_value=self._array(values=[self.value(x) for x in v]))
        if isinstance(v, dict):
            return V(map_value=self._map(fields={str(k): self.value(x) for k, x in v.items()}))
        raise TypeError(f"no Firestore value for {type(v).__name__}")

    def path(self, *parts: str) -> str:
        """A field path from segments, quoted where Firestore needs it (``k.`ab-1`.n``)."""
        return str(self._field_path(*parts).to_api_repr())

    def set(self, path: str, fields: dict[str, Any]) -> Any:
        """``set(fields)``: the document replaced whole."""
        return self._wrap(self._write(update=self._doc(name=path, fields=self._fields(fields))))

    def create(self, path: str, fields: dict[str, Any]) -> Any:
        """``create(fields)``: fails with ALREADY_EXISTS when the document exists."""
        pre = self._precondition(exists=False)
        return self._wrap(self._write(update=self._doc(name=path, fields=self._fields(fields)), current_document=pre))

    def as_create(self, wrapped: Any) -> Any:
        """The same write made a ``create()``: it fails with ALREADY_EXISTS when the document exists."""
        pb = self._write()
        pb.CopyFrom(wrapped._pb)
        pb.current_document.CopyFrom(self._precondition(exists=False))
        return self._wrap(pb)

    def merge(
        self,
        path: str,
        fields: dict[str, Any],
        increments: dict[str, int] | None = None,
        maxima: dict[str, float] | None = None,
    ) -> Any:
        """``set(fields, merge=True)`` plus transforms: ``increments`` / ``maxima`` map field paths (``path()``)
        to the amount to add / the value to keep if larger. Top-level ``fields`` only are masked (overwritten)."""
        transforms = [
            self._transform(field_path=p, increment=self._value(integer_value=n)) for p, n in (increments or {}).items()
        ]
        transforms += [
            self._transform(field_path=p, maximum=self._value(double_value=float(m))) for p, m in (maxima or {}).items()
        ]
        mask = self._mask(field_paths=sorted(self.path(k) for k in fields))
        doc = self._doc(name=path, fields=self._fields(fields))
        return self._wrap(self._write(update=doc, update_mask=mask, update_transforms=transforms))

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: self.value(v) for k, v in fields.items()}
