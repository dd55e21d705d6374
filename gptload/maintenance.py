"""Periodic upkeep: flush buffered usage, purge expired affinity records.

Serverless deployments call it through the scheduled task endpoint; the embedded mode runs it on a timer
thread (``start_embedded_timer``), since a laptop process has its CPU all the time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptload.app import Services

log = logging.getLogger(__name__)


def run_maintenance(services: Services) -> dict[str, Any]:
    """One round of upkeep; returns what it did."""
    report: dict[str, Any] = {"usage_flushed": services.usage.flush()}
    purge = getattr(services.store, "purge_expired", None)
    if purge is not None:
        report["bindings_purged"] = purge(time.time())
    return report


def start_embedded_timer(services: Services) -> threading.Thread | None:
    """Run ``run_maintenance`` every MAINTENANCE_INTERVAL_SECONDS in embedded mode (0 disables it)."""
    interval = services.config.maintenance_interval_seconds
    if services.config.store != "sqlite" or interval <= 0:
        return None

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                run_maintenance(services)
            except Exception:
                log.exception("maintenance round failed")

    thread = threading.Thread(target=loop, name="gptload-maintenance", daemon=True)
    thread.start()
    return thread
