"""The ``proxy_url`` setting's text rules, pure: what a valid value is, its masked form, and how a masked value
sent back by the console keeps the stored one.

A proxy URL may carry credentials (``http://user:pass@host:port``): they are secrets. The admin API shows the URL
with its user info replaced by ``****`` (``http://****@host:port``); a value equal to the stored value's masked form
means "unchanged" when settings are saved, so the console can send its form back without erasing the password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = ("http", "https", "socks5", "socks5h")
MASK = "****"


def check(value: str) -> str:
    """``value`` stripped when it is empty or a proxy URL gptload can use; ValueError saying what is wrong otherwise
    (the message never repeats the value: it may hold a password)."""
    value = value.strip()
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("must be a URL like http://user:pass@host:port") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname or port is None:
        raise ValueError("must name a host and a port (http://user:pass@host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://[user:pass@]host:port with no path, query or fragment")
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise ValueError("must not contain spaces or control characters")
    return value.rstrip("/")


def mask(value: str) -> str:
    """``value`` with any user info replaced by ``****``; "" stays ""."""
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return MASK
    _userinfo, at, host = rest.rpartition("@")
    return f"{scheme}://{MASK}@{host}" if at else value


def keep_stored(sent: str, stored: str) -> str:
    """The value to store when ``sent`` arrives and ``stored`` is in place: ``stored`` when ``sent`` is its
    masked form (the console sent back what it was shown), ``sent`` otherwise."""
    if stored and sent == mask(stored) and sent != stored:
        return stored
    return sent
