"""Periodic upkeep, one round at a time:

1. flush this instance's buffered usage (stats, request logs);
2. re-probe, every round, the keys disabled by anything but evidence about the key (``blacklist_threshold``
   isolated failures, or an older version that counted outages), so that they come back as soon as they work;
   re-validate, per group at most every ``key_validation_interval_minutes``, the keys invalid on key evidence and
   the keys whose cooldowns have ended (with the same probe as the console's validation);
3. trim request logs past ``request_log_retention_days``, and expired affinity records and usage batch names
   (``Store.purge_expired``: a no-op where TTL policies do it);
4. seal ``proxy_url`` credentials an older version stored in clear (``Admin.seal_stored_proxy_urls``).

Serverless deployments call it through ``POST /api/tasks/run`` (Cloud Scheduler with an OIDC token); the embedded
mode runs it on a timer thread (``start_embedded_timer``), since a laptop process has its CPU all the time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from gptload.keypool.state import condemned_by_key_evidence
from gptload.models import INVALID

if TYPE_CHECKING:
    from gptload.app import Services

log = logging.getLogger(__name__)
DAY = 86400.0


def run_maintenance(services: Services, now: float | None = None) -> dict[str, Any]:
    """One round of upkeep; returns what it did."""
    now = now or time.time()
    report: dict[str, Any] = {"usage_flushed": services.usage.flush(), "validated": {}}
    for view in services.pool.views():
        marker_id = f"maintenance:{view.name}"
        marker = services.store.get_task(marker_id) or {}
        scheduled = (
            now - float(marker.get("last_validation_at", 0)) >= view.settings.key_validation_interval_minutes * 60
        )
        due = [
            k
            for k in view.keys
            if (k.state.status == INVALID and not condemned_by_key_evidence(k.state))
            or (scheduled and (k.state.status == INVALID or (k.state.cooldowns and not k.state.live_cooldowns(now))))
        ]
        if due:
            report["validated"][view.name] = services.validator.validate(view, due)
        if scheduled:
            services.store.put_task({"id": marker_id, "kind": "maintenance", "last_validation_at": now})
    retention = services.pool.settings.request_log_retention_days
    report["logs_purged"] = services.store.purge_logs(now - retention * DAY)
    report["bindings_purged"] = services.store.purge_expired(now)
    report["proxy_urls_sealed"] = services.admin.seal_stored_proxy_urls()
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
