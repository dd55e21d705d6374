"""Process configuration, read once from the environment into a frozen dataclass.

Only deployment facts live here (where state is, how to reach it, the admin secret). Everything a user tunes at
runtime (retries, thresholds, timeouts...) is a *setting* stored in the store; see ``gptload.settings``.
Nothing outside this module reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gptload.errors import ConfigError

STORES = ("sqlite", "firestore")
VAULTS = ("store", "secretmanager")
MIN_PASSPHRASE = 32


@dataclass(frozen=True)
class Config:
    auth_key: str = field(repr=False)
    port: int = 8080
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    data_dir: str = "./data"
    encryption_key: str | None = field(default=None, repr=False)
    store: str = "sqlite"
    vault: str = "store"
    google_cloud_project: str | None = None
    firestore_database: str = "(default)"
    secret_prefix: str = "gptload"
    state_refresh_seconds: float = 5.0
    max_body_bytes: int = 64 * 1024 * 1024
    threads: int = 128
    allowed_origins: tuple[str, ...] = ()
    maintenance_interval_seconds: float = 60.0
    usage_flush_seconds: float = 5.0
    usage_buffer_max: int = 50_000
    usage_flush_min_events: int = 1
    usage_flush_max_seconds: float = 60.0
    oidc_audience: str | None = None
    oidc_service_account: str | None = None
    # python main.py's own server (on Cloud Run, Google's front end and Cloud Run's limits protect the function)
    request_header_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 30.0
    graceful_timeout_seconds: int = 30
    trusted_proxy_hops: int = 0  # proxies in front whose X-Forwarded-For / -Proto are believed (Cloud Run: 1)
    # python main.py only: PEM certificate chain and private key; both set = listen with TLS (HTTPS and wss://)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    metrics_token: str | None = field(default=None, repr=False)  # GET /metrics also accepts it (besides AUTH_KEY)
    metrics_log_seconds: float = 0.0  # > 0: /metrics' figures as structured log lines this often (gptload.metrics_log)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the config from ``env`` (default ``os.environ``); raise ConfigError with a clear message."""
        env = os.environ if env is None else env
        auth_key = env.get("AUTH_KEY", "").strip()
        if not auth_key:
            raise ConfigError(
                "AUTH_KEY is not set. It is the admin password of the admin API and console; "
                "start with e.g. AUTH_KEY=$(python -c 'import secrets;print(secrets.token_urlsafe(24))')"
            )
        if len(auth_key) < 8:
            raise ConfigError("AUTH_KEY must be at least 8 characters long")
        encryption_key = env.get("ENCRYPTION_KEY") or None
        if encryption_key is not None and len(encryption_key) < MIN_PASSPHRASE:
            raise ConfigError(f"ENCRYPTION_KEY must be a passphrase of at least {MIN_PASSPHRASE} characters")
        store = env.get("STORE", "sqlite").lower()
        if store not in STORES:
            raise ConfigError(f"STORE must be one of {', '.join(STORES)}, not {store!r}")
        vault = env.get("VAULT", "store").lower()
        if vault not in VAULTS:
            raise ConfigError(f"VAULT must be one of {', '.join(VAULTS)}, not {vault!r}")
        project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or None
        if (store == "firestore" or vault == "secretmanager") and not project:
            raise ConfigError("GOOGLE_CLOUD_PROJECT is required with STORE=firestore or VAULT=secretmanager")
        if store == "firestore" and vault == "store" and not encryption_key:
            raise ConfigError("ENCRYPTION_KEY is required with STORE=firestore and VAULT=store")
        tls_cert, tls_key = env.get("TLS_CERT_FILE") or None, env.get("TLS_KEY_FILE") or None
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both (PEM files) or neither")
        for name, path in (("TLS_CERT_FILE", tls_cert), ("TLS_KEY_FILE", tls_key)):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{name} names no readable file: {path!r}")
        metrics_token = env.get("METRICS_TOKEN", "").strip() or None
        if metrics_token is not None and len(metrics_token) < 16:
            raise ConfigError("METRICS_TOKEN must be at least 16 characters long")
        origins = tuple(o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
        return cls(
            auth_key=auth_key,
            port=_int(env, "PORT", 8080, 1, 65535),
            host=env.get("HOST", "127.0.0.1"),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            data_dir=env.get("DATA_DIR", "./data"),
            encryption_key=encryption_key,
            store=store,
            vault=vault,
            google_cloud_project=project,
            firestore_database=env.get("FIRESTORE_DATABASE", "(default)"),
            secret_prefix=env.get("SECRET_PREFIX", "gptload"),
            state_refresh_seconds=_float(env, "STATE_REFRESH_SECONDS", 5.0, 0.0, 300.0),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024 * 1024, 1024, 2**31),
            threads=_int(env, "THREADS", 128, 1, 4000),
            allowed_origins=origins,
            maintenance_interval_seconds=_float(env, "MAINTENANCE_INTERVAL_SECONDS", 60.0, 0.0, 86400.0),
            usage_flush_seconds=_float(env, "USAGE_FLUSH_SECONDS", 5.0, 0.1, 3600.0),
            usage_buffer_max=_int(env, "USAGE_BUFFER_MAX", 50_000, 100, 10_000_000),
            # Firestore bills ~3 writes per flush: wait for 100 events (or USAGE_FLUSH_MAX_SECONDS) there
            usage_flush_min_events=_int(env, "USAGE_FLUSH_MIN_EVENTS", 100 if store == "firestore" else 1, 1, 100_000),
            usage_flush_max_seconds=_float(env, "USAGE_FLUSH_MAX_SECONDS", 60.0, 0.1, 3600.0),
            oidc_audience=env.get("OIDC_AUDIENCE") or None,
            oidc_service_account=env.get("OIDC_SERVICE_ACCOUNT") or None,
            request_header_timeout_seconds=_float(env, "REQUEST_HEADER_TIMEOUT_SECONDS", 10.0, 0.1, 3600.0),
            request_body_timeout_seconds=_float(env, "REQUEST_BODY_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0),
            graceful_timeout_seconds=_int(env, "GRACEFUL_TIMEOUT_SECONDS", 30, 1, 3600),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 0, 0, 16),
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            metrics_token=metrics_token,
            metrics_log_seconds=_float(env, "METRICS_LOG_SECONDS", 0.0, 0.0, 86400.0),
        )


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return int(_number(env, name, default, lo, hi, int))


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    return _number(env, name, default, lo, hi, float)


def _number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float, kind: type) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value: float = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {noun}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}")
    return value
