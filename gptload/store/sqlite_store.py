"""SQLite adapter of the Store port: the embedded default (``STORE=sqlite``, file ``DATA_DIR/gptload.db``).

Concurrency: one connection per thread, WAL journal, ``busy_timeout`` and ``BEGIN IMMEDIATE`` for every write so
writers queue instead of failing with "database is locked" (tested with 64 concurrent writers). Schema changes are
numbered migrations applied in order and recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gptload.errors import Conflict, GroupExists, GroupNotFound, NotFound, StoreRejected, StoreUnavailable
from gptload.keypool.classify import Verdict
from gptload.keypool.state import Policy, disabled, enabled, restored, transition
from gptload.models import (
    ACTIVE,
    COOLING,
    DISABLED,
    INVALID,
    LOG_FIELDS,
    AccessKey,
    CoolDown,
    Group,
    KeyQuery,
    KeyRecord,
    KeyState,
    LogQuery,
    UsageEvent,
)
from gptload.store.base import Binding, batch_key, chunks
from gptload.store.rollup import ACCESS_STAT_FIELDS, STAT_FIELDS, rollup

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE groups (
        name TEXT PRIMARY KEY, data TEXT NOT NULL, sort INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE keys (
        group_name TEXT NOT NULL, id TEXT NOT NULL, masked TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active', cooldowns TEXT NOT NULL DEFAULT '[]',
        failure_count INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        request_count INTEGER NOT NULL DEFAULT 0, failure_total INTEGER NOT NULL DEFAULT 0,
        last_used_at REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, notes TEXT NOT NULL DEFAULT '',
        secret BLOB,
        PRIMARY KEY (group_name, id)
    );
    CREATE TABLE bindings (
        kind TEXT NOT NULL, name TEXT NOT NULL, group_name TEXT NOT NULL, key_id TEXT NOT NULL,
        target TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (kind, name)
    );
    CREATE INDEX bindings_expiry ON bindings (expires_at);
    """,
    # 2: request logs, statistics, tasks, per-key tokens
    """
    CREATE TABLE request_logs (
        id TEXT PRIMARY KEY, at REAL NOT NULL, group_name TEXT NOT NULL, key_id TEXT NOT NULL,
        key_masked TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
        status_code INTEGER NOT NULL, success INTEGER NOT NULL, stream INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL, attempt INTEGER NOT NULL, final INTEGER NOT NULL,
        source_ip TEXT NOT NULL, user_agent TEXT NOT NULL, error TEXT NOT NULL, upstream TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL, candidates_tokens INTEGER NOT NULL, total_tokens INTEGER NOT NULL,
        request_body TEXT
    );
    CREATE INDEX request_logs_at ON request_logs (at);
    CREATE INDEX request_logs_group_at ON request_logs (group_name, at);
    CREATE TABLE stats_hourly (
        group_name TEXT NOT NULL, hour REAL NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
        candidates_tokens INTEGER NOT NULL DEFAULT 0, total_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (group_name, hour)
    );
    CREATE TABLE stats_minute (
        group_name TEXT NOT NULL, minute REAL NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (group_name, minute)
    );
    CREATE TABLE tasks (id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
    ALTER TABLE keys ADD COLUMN total_tokens INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: per-purpose change markers instead of one version; when a key's state was last written
    """
    DELETE FROM meta WHERE k = 'version';
    ALTER TABLE keys ADD COLUMN state_at REAL NOT NULL DEFAULT 0;
    CREATE INDEX keys_state_at ON keys (group_name, state_at);
    """,
    # 4: names of applied usage batches, so a retried batch is counted once
    """
    CREATE TABLE usage_batches (key TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
    # 5: the model a client asked for when a group's redirect sent another one upstream
    """
    ALTER TABLE request_logs ADD COLUMN requested_model TEXT NOT NULL DEFAULT '';
    """,
    # 6: the aggregate group a request came in through (its ``group_name`` is the member that served it)
    """
    ALTER TABLE request_logs ADD COLUMN aggregate TEXT NOT NULL DEFAULT '';
    """,
    # 7: hourly counters over every attempt: retries, failed attempts, requests refused before any upstream call
    """
    ALTER TABLE stats_hourly ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stats_hourly ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stats_hourly ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: when the last error was written, validation marks; indexes for the key list's sorts
    """
    ALTER TABLE keys ADD COLUMN last_error_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE keys ADD COLUMN validated_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE keys ADD COLUMN validation TEXT NOT NULL DEFAULT '';
    CREATE INDEX keys_created ON keys (group_name, created_at, id);
    CREATE INDEX keys_requests ON keys (group_name, request_count);
    CREATE INDEX keys_failures ON keys (group_name, failure_total);
    CREATE INDEX keys_last_used ON keys (group_name, last_used_at);
    CREATE INDEX keys_status ON keys (group_name, status);
    """,
    # 9: access keys, their hourly usage, the access key of each log row, instance heartbeats
    """
    ALTER TABLE request_logs ADD COLUMN access_key TEXT NOT NULL DEFAULT 'anonymous';
    CREATE INDEX request_logs_access_at ON request_logs (access_key, at);
    CREATE TABLE access_keys (
        id TEXT PRIMARY KEY, digest TEXT NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE access_stats_hourly (
        access_key TEXT NOT NULL, hour REAL NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0, refused INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, candidates_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0, last_used_at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (access_key, hour)
    );
    CREATE INDEX access_stats_hour ON access_stats_hourly (hour);
    CREATE TABLE instances (id TEXT PRIMARY KEY, seen_at REAL NOT NULL);
    """,
)
_LOG_COLUMNS = (
    "id, at, group_name, key_id, key_masked, model, method, path, status_code, success, stream, duration_ms, "
    "attempt, final, source_ip, user_agent, error, upstream, prompt_tokens, candidates_tokens, total_tokens, "
    "requested_model, aggregate, access_key"
)

_KEY_COLUMNS = (
    "group_name, id, masked, status, cooldowns, failure_count, last_error, request_count, failure_total, "
    "last_used_at, created_at, notes, total_tokens, last_error_at, validated_at, validation"
)
# KeyQuery.sort -> the SQL it orders by (``?`` is bound to ``now`` for the status rank)
_LIVE_COOLDOWN = "EXISTS (SELECT 1 FROM json_each(cooldowns) WHERE json_extract(value, '$.until') > ?)"
_KEY_SORT_SQL = {
    "created": "created_at",
    "requests": "request_count",
    "failures": "failure_total",
    "last_used": "last_used_at",
    "status": f"CASE status WHEN 'active' THEN (CASE WHEN {_LIVE_COOLDOWN} THEN 1 ELSE 0 END) "
    "WHEN 'invalid' THEN 2 ELSE 3 END",
}


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` 0700, or narrow it to 0700; a shared sticky directory (like /tmp) is left alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    current = directory.stat().st_mode
    if current & stat.S_ISVTX:
        log.warning("DATA_DIR %s is a shared (sticky) directory; prefer a directory of gptload's own", directory)
    elif stat.S_IMODE(current) != 0o700:
        _chmod(directory, 0o700)


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:  # not ours (a mounted volume...): keep going, but say so
        log.warning("cannot set mode %o on %s: %s", mode, path, exc)


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        make_private_dir(Path(path).parent)
        # SQLite creates -wal and -shm with the mode of the database file: create that one 0600 first (and narrow
        # what an older version left wider), so that none of them (proxy-key digests, the salt) is ever 0644.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm", "-journal"):
            _chmod(Path(path + suffix), 0o600)
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._all_lock = threading.Lock()
        self._salt: bytes | None = None
        self._migrate()

    # -- plumbing -------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the SQLite store: {exc}") from exc
            self._local.conn = conn
            with self._all_lock:
                # Close the connections of threads that have ended (validation pools, helper threads), so that
                # short-lived threads do not leak a connection and its page cache each.
                alive = []
                for thread, other in self._all:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                alive.append((threading.current_thread(), conn))
                self._all = alive
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front, so concurrent writers queue on busy_timeout."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store busy: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite commit failed: {exc}") from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            cur = self._conn().execute(sql, args)
            return cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

    def _migrate(self) -> None:
        with self._write() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @staticmethod
    def _bump(conn: sqlite3.Connection, marker: str) -> None:
        conn.execute(
            "INSERT INTO meta (k, v) VALUES (?, '1') "
            "ON CONFLICT(k) DO UPDATE SET v = CAST(CAST(v AS INTEGER) + 1 AS TEXT)",
            (f"marker:{marker}",),
        )

    def close(self) -> None:
        with self._all_lock:
            for _, conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    # -- meta -----------------------------------------------------------------------------------------------
    def markers(self) -> dict[str, int]:
        rows = self._read("SELECT k, v FROM meta WHERE k LIKE 'marker:%'")
        return {k.removeprefix("marker:"): int(v) for k, v in rows}

    def salt(self) -> bytes:
        if self._salt is None:
            with self._write() as conn:
                conn.execute("INSERT OR IGNORE INTO meta (k, v) VALUES ('salt', ?)", (secrets.token_hex(32),))
                self._salt = bytes.fromhex(conn.execute("SELECT v FROM meta WHERE k = 'salt'").fetchone()[0])
        return self._salt

    # -- settings -------------------------------------------------------------------------------------------
    def get_settings(self) -> dict[str, Any]:
        return {name: json.loads(value) for name, value in self._read("SELECT name, value FROM settings")}

    def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v)) for k, v in values.items()],
            )
            self._bump(conn, "config")
        return self.get_settings()

    # -- groups ---------------------------------------------------------------------------------------------
    def list_groups(self) -> list[Group]:
        rows = self._read("SELECT data FROM groups ORDER BY sort, name")
        return [Group.from_dict(json.loads(r[0])) for r in rows]

    def get_group(self, name: str) -> Group | None:
        rows = self._read("SELECT data FROM groups WHERE name = ?", (name,))
        return Group.from_dict(json.loads(rows[0][0])) if rows else None

    def create_group(self, group: Group) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM groups WHERE name = ?", (group.name,)).fetchone():
                raise GroupExists(f"a group named {group.name!r} already exists")
            conn.execute(
                "INSERT INTO groups (name, data, sort, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (group.name, json.dumps(group.to_dict()), group.sort, group.created_at, group.updated_at),
            )
            self._bump(conn, "config")

    def update_group(self, group: Group) -> None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE groups SET data = ?, sort = ?, updated_at = ? WHERE name = ?",
                (json.dumps(group.to_dict()), group.sort, group.updated_at, group.name),
            )
            if cur.rowcount == 0:
                raise GroupNotFound(f"no group named {group.name!r}")
            self._bump(conn, "config")

    def delete_group(self, name: str) -> int:
        with self._write() as conn:
            if conn.execute("DELETE FROM groups WHERE name = ?", (name,)).rowcount == 0:
                raise GroupNotFound(f"no group named {name!r}")
            deleted = conn.execute("DELETE FROM keys WHERE group_name = ?", (name,)).rowcount
            conn.execute("DELETE FROM bindings WHERE group_name = ?", (name,))
            self._bump(conn, "config")
            self._bump(conn, f"keys:{name}")
        return deleted

    # -- keys -----------------------------------------------------------------------------------------------
    def list_keys(self, group: str) -> list[KeyRecord]:
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? ORDER BY created_at, id", (group,))
        return [_record(r) for r in rows]

    def changed_keys(self, group: str, since: float) -> list[KeyRecord]:
        rows = self._read(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND state_at >= ? ORDER BY created_at, id",
            (group, since),
        )
        return [_record(r) for r in rows]

    def query_keys(self, group: str, query: KeyQuery, offset: int, limit: int) -> tuple[list[KeyRecord], int]:
        """One COUNT and one page query on the group's keys (indexes on the sort columns)."""
        clauses: list[str] = ["group_name = ?"]
        args: list[Any] = [group]
        if query.key_id is not None:
            clauses.append("id = ?")
            args.append(query.key_id)
        if query.status in (INVALID, DISABLED):
            clauses.append("status = ?")
            args.append(query.status)
        elif query.status in (ACTIVE, COOLING):
            clauses.append(f"status = 'active' AND {'' if query.status == COOLING else 'NOT '}{_LIVE_COOLDOWN}")
            args.append(query.now)
        if query.text:
            clauses.append(
                "(instr(lower(masked), lower(?)) > 0 OR instr(lower(notes), lower(?)) > 0 "
                "OR instr(lower(last_error), lower(?)) > 0)"
            )
            args += [query.text] * 3
        where = " AND ".join(clauses)
        total = self._read(f"SELECT COUNT(*) FROM keys WHERE {where}", tuple(args))[0][0]
        order = _KEY_SORT_SQL[query.sort]
        order_args = [query.now] if query.sort == "status" else []
        direction = "DESC" if query.descending else "ASC"
        rows = self._read(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE {where} "
            f"ORDER BY {order} {direction}, created_at {direction}, id {direction} "
            "LIMIT ? OFFSET ?",
            (*args, *order_args, limit, offset),
        )
        return [_record(r) for r in rows], int(total)

    def set_disabled(self, group: str, ids: list[str], disable: bool) -> int:
        """Disable (or enable) the keys in one transaction with ``keypool.state.disabled``/``enabled``."""
        change = disabled if disable else enabled
        changed = 0
        with self._write() as conn:
            for chunk in chunks(list(dict.fromkeys(ids)), 500):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND id IN ({marks})", (group, *chunk)
                ).fetchall()
                for row in rows:
                    record = _record(row)
                    new = change(record.state)
                    if new != record.state:
                        self._write_state(conn, group, record.id, new)
                        changed += 1
            if changed:
                self._bump(conn, f"state:{group}")
        return changed

    def record_validations(self, group: str, outcomes: dict[str, str], at: float) -> None:
        if not outcomes:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE keys SET validation = ?, validated_at = ? WHERE group_name = ? AND id = ?",
                [(outcome, at, group, key_id) for key_id, outcome in outcomes.items()],
            )

    def add_keys(self, group: str, records: list[KeyRecord], secrets: dict[str, bytes]) -> list[str]:
        added: list[str] = []
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone():
                raise GroupNotFound(f"no group named {group!r}")
            for r in records:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO keys (group_name, id, masked, status, created_at, notes, secret) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (group, r.id, r.masked, r.state.status, r.created_at, r.notes, secrets.get(r.id)),
                )
                if cur.rowcount:
                    added.append(r.id)
            if added:
                self._bump(conn, f"keys:{group}")
        return added

    def delete_keys(self, group: str, ids: list[str]) -> int:
        if not ids:
            return 0
        with self._write() as conn:
            deleted = 0
            for chunk in chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(
                    f"DELETE FROM keys WHERE group_name = ? AND id IN ({marks})", (group, *chunk)
                ).rowcount
            if deleted:
                self._bump(conn, f"keys:{group}")
        return deleted

    def apply_verdict(
        self, group: str, key_id: str, verdict: Verdict, model: str, now: float, policy: Policy
    ) -> KeyRecord | None:
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND id = ?", (group, key_id)
            ).fetchone()
            if row is None:
                return None
            record = _record(row)
            new = transition(record.state, verdict, model, now, policy)
            if new == record.state:
                return record
            self._write_state(conn, group, key_id, new)
            if new.status != record.state.status or new.cooldowns != record.state.cooldowns:
                self._bump(conn, f"state:{group}")
        return record.with_state(new)

    def restore_keys(self, group: str, ids: list[str] | None) -> int:
        changed = 0
        with self._write() as conn:
            if ids is None:
                rows = conn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND (status = ? OR cooldowns != '[]')",
                    (group, INVALID),
                ).fetchall()
            else:
                rows = []
                for chunk in chunks(ids, 500):
                    marks = ",".join("?" * len(chunk))
                    rows += conn.execute(
                        f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND id IN ({marks})", (group, *chunk)
                    ).fetchall()
            for row in rows:
                record = _record(row)
                new = restored(record.state)
                if new != record.state:
                    self._write_state(conn, group, record.id, new)
                    changed += 1
            if changed:
                self._bump(conn, f"state:{group}")
        return changed

    @staticmethod
    def _write_state(conn: sqlite3.Connection, group: str, key_id: str, state: KeyState) -> None:
        conn.execute(
            "UPDATE keys SET status = ?, cooldowns = ?, failure_count = ?, last_error = ?, last_error_at = ?, "
            "state_at = ? WHERE group_name = ? AND id = ?",
            (
                state.status,
                _dump_cooldowns(state.cooldowns),
                state.failure_count,
                state.last_error,
                state.last_error_at,
                time.time(),
                group,
                key_id,
            ),
        )

    def record_usage(self, events: list[UsageEvent]) -> None:
        """One transaction per batch: all of it or nothing. A row SQLite can never take (an integer out of range,
        a constraint or data error, text that is not encodable) rolls the batch back and raises StoreRejected
        naming every event of the batch (the caller halves it to find the bad ones); other failures raise
        StoreUnavailable."""
        if not events:
            return
        try:
            self._record_usage(events)
        except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, UnicodeError) as exc:
            reason = f"SQLite rejected the usage batch: {type(exc).__name__}: {str(exc)[:200]}"
            raise StoreRejected(reason, events=events) from exc

    def _record_usage(self, events: list[UsageEvent]) -> None:
        usage = rollup(events)
        with self._write() as conn:
            applied = conn.execute(
                "INSERT OR IGNORE INTO usage_batches (key, at) VALUES (?, ?)", (batch_key(events), time.time())
            )
            if applied.rowcount == 0:
                return  # this very batch was recorded before (a retry)
            conn.executemany(
                "UPDATE keys SET request_count = request_count + ?, failure_total = failure_total + ?, "
                "last_used_at = MAX(last_used_at, ?), total_tokens = total_tokens + ? WHERE group_name = ? AND id = ?",
                [
                    (int(u.requests), int(u.failures), u.last_used_at, int(u.tokens), g, k)
                    for (g, k), u in usage.keys.items()
                ],
            )
            conn.executemany(
                f"INSERT INTO stats_hourly (group_name, hour, {', '.join(STAT_FIELDS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(STAT_FIELDS))}) ON CONFLICT(group_name, hour) DO UPDATE SET "
                + ", ".join(f"{f} = {f} + excluded.{f}" for f in STAT_FIELDS),
                [(g, hr, *stats.values()) for (g, hr), stats in usage.hours.items()],
            )
            conn.executemany(
                "INSERT INTO stats_minute (group_name, minute, requests) VALUES (?, ?, ?) "
                "ON CONFLICT(group_name, minute) DO UPDATE SET requests = requests + excluded.requests",
                [(g, m, n) for (g, m), n in usage.minutes.items()],
            )
            conn.executemany(
                f"INSERT OR IGNORE INTO request_logs ({_LOG_COLUMNS}, request_body) VALUES ({','.join('?' * 25)})",
                [
                    (
                        e.id or secrets.token_hex(8),
                        e.at,
                        e.group,
                        e.key_id,
                        e.key_masked,
                        e.model,
                        e.method,
                        e.path,
                        e.status_code,
                        int(e.success),
                        int(e.stream),
                        e.duration_ms,
                        e.attempt,
                        int(e.final),
                        e.source_ip,
                        e.user_agent,
                        e.error,
                        e.upstream,
                        e.prompt_tokens,
                        e.candidates_tokens,
                        e.total_tokens,
                        e.requested_model or e.model,
                        e.aggregate,
                        e.access_key,
                        e.request_body,
                    )
                    for e in usage.logged
                ],
            )
            counters = ", ".join(ACCESS_STAT_FIELDS)
            conn.executemany(
                f"INSERT INTO access_stats_hourly (access_key, hour, {counters}, last_used_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(access_key, hour) DO UPDATE SET "
                + ", ".join(f"{f} = {f} + excluded.{f}" for f in ACCESS_STAT_FIELDS)
                + ", last_used_at = MAX(last_used_at, excluded.last_used_at)",
                [(a, hr, *stats.counters(), stats.last_used_at) for (a, hr), stats in usage.access.items()],
            )

    # -- request logs and statistics ------------------------------------------------------------------------
    def query_logs(self, query: LogQuery, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        where, args = _log_filter(query)
        total = self._read(f"SELECT COUNT(*) FROM request_logs{where}", tuple(args))[0][0]
        rows = self._read(
            f"SELECT {_LOG_COLUMNS} FROM request_logs{where} ORDER BY at DESC, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_log(r) for r in rows], int(total)

    def get_log(self, log_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {_LOG_COLUMNS}, request_body FROM request_logs WHERE id = ?", (log_id,))
        if not rows:
            return None
        return {**_log(rows[0][:-1]), "request_body": rows[0][-1]}

    def purge_logs(self, before: float) -> int:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM request_logs WHERE at < ?", (before,)).rowcount
            conn.execute("DELETE FROM stats_minute WHERE minute < ?", (before,))
        return deleted

    def hourly_stats(self, group: str | None, since: float) -> list[dict[str, Any]]:
        """Buckets at or after ``since``, summed over groups unless ``group`` is given, oldest first."""
        fields = ", ".join(f"SUM({f})" for f in STAT_FIELDS)
        if group is None:
            rows = self._read(
                f"SELECT hour, {fields} FROM stats_hourly WHERE hour >= ? GROUP BY hour ORDER BY hour", (since,)
            )
        else:
            rows = self._read(
                f"SELECT hour, {fields} FROM stats_hourly WHERE group_name = ? AND hour >= ? GROUP BY hour "
                "ORDER BY hour",
                (group, since),
            )
        return [{"hour": r[0], **{f: int(v or 0) for f, v in zip(STAT_FIELDS, r[1:], strict=True)}} for r in rows]

    def group_totals(self, since: float) -> dict[str, dict[str, int]]:
        fields = ", ".join(f"SUM({f})" for f in STAT_FIELDS)
        rows = self._read(
            f"SELECT group_name, {fields} FROM stats_hourly WHERE hour >= ? GROUP BY group_name", (since,)
        )
        return {r[0]: {f: int(v or 0) for f, v in zip(STAT_FIELDS, r[1:], strict=True)} for r in rows}

    def requests_since(self, since: float, group: str | None = None) -> int:
        if group is not None:
            rows = self._read(
                "SELECT SUM(requests) FROM stats_minute WHERE group_name = ? AND minute >= ?", (group, since)
            )
            return int(rows[0][0] or 0)
        rows = self._read("SELECT SUM(requests) FROM stats_minute WHERE minute >= ?", (since,))
        return int(rows[0][0] or 0)

    # -- notes and tasks ------------------------------------------------------------------------------------
    def set_key_notes(self, group: str, key_id: str, notes: str) -> KeyRecord | None:
        with self._write() as conn:
            conn.execute("UPDATE keys SET notes = ? WHERE group_name = ? AND id = ?", (notes, group, key_id))
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE group_name = ? AND id = ?", (group, key_id)
            ).fetchone()
        return _record(row) if row else None

    def put_task(self, task: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tasks (id, data, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (task["id"], json.dumps(task), time.time()),
            )

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT data FROM tasks WHERE id = ?", (task_id,))
        return json.loads(rows[0][0]) if rows else None

    # -- secrets --------------------------------------------------------------------------------------------
    def get_secrets(self, group: str) -> dict[str, bytes]:
        rows = self._read("SELECT id, secret FROM keys WHERE group_name = ? AND secret IS NOT NULL", (group,))
        return {r[0]: bytes(r[1]) for r in rows}

    # -- affinity -------------------------------------------------------------------------------------------
    def put_binding(self, binding: Binding) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO bindings (kind, name, group_name, key_id, target, expires_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(kind, name) DO UPDATE SET group_name = excluded.group_name, key_id = excluded.key_id, "
                "target = excluded.target, expires_at = excluded.expires_at",
                (binding.kind, binding.name, binding.group, binding.key_id, binding.target, binding.expires_at),
            )

    def get_binding(self, kind: str, name: str, now: float) -> Binding | None:
        rows = self._read(
            "SELECT kind, name, group_name, key_id, target, expires_at FROM bindings "
            "WHERE kind = ? AND name = ? AND expires_at > ?",
            (kind, name, now),
        )
        return Binding(*rows[0]) if rows else None

    def purge_expired(self, now: float) -> int:
        """Delete expired bindings and usage batch names older than a day (SQLite has no TTL)."""
        with self._write() as conn:
            conn.execute("DELETE FROM usage_batches WHERE at <= ?", (now - 86400,))
            return conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,)).rowcount

    # -- access keys ----------------------------------------------------------------------------------------
    def list_access_keys(self) -> list[AccessKey]:
        rows = self._read("SELECT data FROM access_keys ORDER BY created_at, id")
        return [AccessKey.from_dict(json.loads(r[0])) for r in rows]

    def get_access_key(self, key_id: str) -> AccessKey | None:
        rows = self._read("SELECT data FROM access_keys WHERE id = ?", (key_id,))
        return AccessKey.from_dict(json.loads(rows[0][0])) if rows else None

    def create_access_key(self, key: AccessKey) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM access_keys WHERE id = ?", (key.id,)).fetchone():
                raise Conflict(f"an access key with id {key.id!r} already exists")
            conn.execute(
                "INSERT INTO access_keys (id, digest, data, created_at) VALUES (?, ?, ?, ?)",
                (key.id, key.digest, json.dumps(key.to_dict()), key.created_at),
            )
            self._bump(conn, "access")

    def update_access_key(self, key: AccessKey) -> None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE access_keys SET digest = ?, data = ? WHERE id = ?",
                (key.digest, json.dumps(key.to_dict()), key.id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no access key {key.id!r}")
            self._bump(conn, "access")

    def delete_access_key(self, key_id: str) -> bool:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM access_keys WHERE id = ?", (key_id,)).rowcount > 0
            if deleted:
                self._bump(conn, "access")
        return deleted

    def access_usage(self, since: float, access_key: str | None = None) -> list[dict[str, Any]]:
        columns = f"access_key, hour, {', '.join(ACCESS_STAT_FIELDS)}, last_used_at"
        if access_key is None:
            rows = self._read(f"SELECT {columns} FROM access_stats_hourly WHERE hour >= ? ORDER BY hour", (since,))
        else:
            rows = self._read(
                f"SELECT {columns} FROM access_stats_hourly WHERE access_key = ? AND hour >= ? ORDER BY hour",
                (access_key, since),
            )
        return [
            {
                "access_key": r[0],
                "hour": float(r[1]),
                **{f: int(v) for f, v in zip(ACCESS_STAT_FIELDS, r[2:-1], strict=True)},
                "last_used_at": float(r[-1]),
            }
            for r in rows
        ]

    def heartbeat(self, instance_id: str, now: float, live_after: float) -> int:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO instances (id, seen_at) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET seen_at = ?",
                (instance_id, now, now),
            )
            conn.execute("DELETE FROM instances WHERE seen_at < ?", (now - 86400,))
            count = conn.execute("SELECT COUNT(*) FROM instances WHERE seen_at >= ?", (live_after,)).fetchone()[0]
        return max(1, int(count))


def _record(row: Sequence[Any]) -> KeyRecord:
    (
        group,
        key_id,
        masked,
        status,
        cooldowns,
        failures,
        last_error,
        requests,
        failure_total,
        last_used,
        created,
        notes,
        tokens,
        last_error_at,
        validated_at,
        validation,
    ) = row
    state = KeyState(
        status=status if status in (ACTIVE, INVALID, DISABLED) else ACTIVE,
        cooldowns=tuple(
            CoolDown(c["model"], float(c["until"]), c.get("reason", ""), bool(c.get("daily", False)))
            for c in json.loads(cooldowns)
        ),
        failure_count=int(failures),
        last_error=last_error,
        last_error_at=float(last_error_at),
    )
    return KeyRecord(
        id=key_id,
        group=group,
        masked=masked,
        state=state,
        request_count=int(requests),
        failure_total=int(failure_total),
        last_used_at=float(last_used),
        created_at=float(created),
        notes=notes,
        total_tokens=int(tokens),
        validated_at=float(validated_at),
        validation=validation,
    )


def _log(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(LOG_FIELDS, row, strict=True))
    for flag in ("success", "stream", "final"):
        out[flag] = bool(out[flag])
    out["requested_model"] = out["requested_model"] or out["model"]  # rows written before redirects existed
    return out


def _log_filter(q: LogQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("group_name", q.group),
        ("key_id", q.key_id),
        ("status_code", q.status_code),
        ("access_key", q.access_key),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    for column, flag in (("success", q.success), ("stream", q.stream)):
        if flag is not None:
            clauses.append(f"{column} = ?")
            args.append(int(flag))
    if q.since is not None:
        clauses.append("at >= ?")
        args.append(q.since)
    if q.until is not None:
        clauses.append("at < ?")
        args.append(q.until)
    if q.model is not None:  # a prefix: "gemini-2.5" matches gemini-2.5-flash and gemini-2.5-pro
        clauses.append("substr(model, 1, length(?)) = ?")
        args.extend((q.model, q.model))
    if q.text:
        clauses.append("instr(lower(error), lower(?)) > 0")
        args.append(q.text)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _dump_cooldowns(cooldowns: tuple[CoolDown, ...]) -> str:
    return json.dumps(
        [
            {"model": c.model, "until": c.until, "reason": c.reason, **({"daily": True} if c.daily else {})}
            for c in cooldowns
        ]
    )
