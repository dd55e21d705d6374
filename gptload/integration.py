"""``GET /api/integration/info``: what a proxy key may use, so that a client tool can configure itself (as GPT-Load's
endpoint of that name): the groups the key opens, each with its endpoint URLs (Gemini's native API and its
OpenAI-compatible layer).

Which groups a presented key opens is one function, ``groups_for_key``; another kind of key (named access keys)
plugs in by extending it. Keys are compared as HMAC digests in constant time (``KeyPool.authorize``); a key that
opens nothing gets 401 and learns nothing about the groups.
"""

from __future__ import annotations

from typing import Any

from gptload.access.gate import AccessGate
from gptload.errors import InvalidProxyKey
from gptload.pool import GroupView, KeyPool

CHANNEL_TYPE = "gemini"
OPENAI_LAYER = "v1beta/openai/"


def groups_for_key(pool: KeyPool, presented: str | None, access: AccessGate | None = None) -> list[GroupView]:
    """The groups ``presented`` may call through ``/proxy/{group}/...``, in display order: for an active access key
    the groups it may use (``AccessGate.allowed_groups``); every group for a global proxy key, else those that list
    it among their proxy keys. Every group's digests are compared (no early exit)."""
    if not presented:
        return []
    views = pool.views()
    if access is not None:
        allowed = access.allowed_groups(presented, [v.name for v in views])
        if allowed is not None:
            names = set(allowed)
            return [view for view in views if view.name in names]
    return [view for view in views if pool.authorize(view, presented)]


def integration_info(
    pool: KeyPool, presented: str | None, public_base: str, access: AccessGate | None = None
) -> dict[str, Any]:
    """The integration document for ``presented``; ``public_base`` is ``http(s)://host[:port]`` as the client sees
    this service (the ``app_url`` setting wins when set). ``InvalidProxyKey`` (401) when the key opens no group."""
    views = groups_for_key(pool, presented, access)
    if not views:
        raise InvalidProxyKey(
            "missing or unknown proxy key: give it as x-goog-api-key, Authorization: Bearer, X-Api-Key or ?key="
        )
    base = (pool.settings.app_url or public_base).rstrip("/")
    groups = []
    for view in views:
        path = f"/proxy/{view.name}"
        groups.append(
            {
                "name": view.name,
                "display_name": view.group.display_name or view.name,
                "description": view.group.description,
                "group_type": view.group.group_type,
                "channel_type": CHANNEL_TYPE,
                "path": path,
                "endpoints": {
                    "gemini": f"{base}{path}",
                    "openai": f"{base}{path}/{OPENAI_LAYER}",
                },
                "test_model": view.group.test_model,
            }
        )
    return {"base_url": base, "groups": groups}
