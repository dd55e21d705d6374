"""The ``proxy_url`` setting's text rules, pure: what a valid value is, its masked form, and how a masked value
sent back by the console keeps the stored one.

A proxy URL may carry credentials (``http://user:pass@host:port``): they are secrets. The admin API shows the URL
with its user info replaced by ``****`` (``http://****@host:port``); a value equal to the stored value's masked form
means "unchanged" when settings are saved, so the console can send its form back without erasing the password.

At rest the user info is sealed (``seal``): ``http://sealed.v1.<AES-GCM ciphertext, base64url>@host:port``, under the
same ENCRYPTION_KEY-derived cipher the store vault uses for keys, bound to the scheme, host and port (it opens in
front of that proxy only); the host and port stay readable, and ``mask`` gives
the same text for the sealed and the clear form, so "unchanged" works on either. ``unseal`` gives the clear URL back
where the value is used (the pool resolves settings with it); a value stored in clear by an older version is read
as is and sealed on its next save. ``scrub`` removes user info from any text (log lines, exception messages).

``DIRECT`` ("direct") says "no proxy": for a group, it overrides a system-wide proxy; system-wide it means the same
as "" (the setting's default).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from urllib.parse import urlsplit

SCHEMES = ("http", "https", "socks5", "socks5h")
MASK = "****"
DIRECT = "direct"
SEALED = "sealed.v1."  # user info of a sealed value: SEALED + base64url(ciphertext)
# A sealed value is longer than its clear form (user info -> "sealed.v1." + base64url of 29 + n bytes): the longest a
# setting of at most 2048 characters becomes once sealed is under this, which the stored-value check allows for it.
SEALED_MAX_LENGTH = 4096
SLOT = "settings/proxy_url"  # the cipher's associated data: SLOT + " " + "scheme://host:port" (see _slot)
# user info in any URL-like text: "scheme://userinfo@", up to the authority's last "@" (a password may hold one)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")


def check(value: str) -> str:
    """``value`` stripped when it is empty or a proxy URL gptload can use; ValueError saying what is wrong otherwise
    (the message never repeats the value: it may hold a password)."""
    value = value.strip()
    if not value:
        return ""
    if value.lower() == DIRECT:
        return DIRECT
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
    if not value or value == DIRECT:
        return value
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


def is_direct(value: str) -> bool:
    """Does ``value`` (a resolved ``proxy_url``) mean "no proxy"?"""
    return not value or value == DIRECT


def scrub(text: str) -> str:
    """``text`` with the user info of every URL in it replaced by ``****`` (``socks5://u:p@h:1`` ->
    ``socks5://****@h:1``): for log lines and exception messages that may echo a proxy URL."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text) if "@" in text else text


def _split(value: str) -> tuple[str, str, str]:
    """(scheme, user info, host:port) of a proxy URL; user info "" when it has none."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return (scheme, userinfo, host) if sep and at else (scheme, "", rest)


def is_sealed(value: str) -> bool:
    return _split(value)[1].startswith(SEALED)


def has_credentials(value: str) -> bool:
    """Does ``value`` carry user info in clear (something to seal)?"""
    userinfo = _split(value)[1]
    return bool(userinfo) and not userinfo.startswith(SEALED)


def seal(value: str, encrypt: Callable[[str, str], bytes]) -> str:
    """``value`` with its user info encrypted (``encrypt(plaintext, slot)``, ``Cipher.encrypt``); unchanged when it
    has none or is sealed already."""
    if not has_credentials(value):
        return value
    scheme, userinfo, host = _split(value)
    blob = base64.urlsafe_b64encode(encrypt(userinfo, _slot(scheme, host))).decode().rstrip("=")
    return f"{scheme}://{SEALED}{blob}@{host}"


def unseal(value: str, decrypt: Callable[[bytes, str], str]) -> str:
    """The clear URL of a sealed ``value`` (``decrypt(blob, slot)``, ``Cipher.decrypt``, may raise); any other value
    unchanged."""
    scheme, userinfo, host = _split(value)
    if not userinfo.startswith(SEALED):
        return value
    raw = userinfo[len(SEALED) :]
    clear = decrypt(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), _slot(scheme, host))
    return f"{scheme}://{clear}@{host}"


def _slot(scheme: str, host: str) -> str:
    """The associated data of a sealed user info: it opens only in front of the scheme, host and port it was sealed
    with, so a sealed value copied in front of another proxy (by someone who can save a proxy_url or write the
    store, without ENCRYPTION_KEY) does not send the credentials there: it stays sealed (the proxy answers 407)."""
    return f"{SLOT} {scheme}://{host}"
