"""``proxyurl``'s text rules: "direct", sealing the user info at rest, scrubbing URL credentials from text."""

from __future__ import annotations

import pytest

from gptload import proxyurl
from gptload.cipher import Cipher, DecryptionFailed
from gptload.settings import Settings

CIPHER = Cipher(b"k" * 32)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:p%40ss:w0rd@proxy.example:3128",
        "socks5h://u:p@10.0.0.1:1080",
        "https://only-user@proxy:443",
        "http://user:p@ss@proxy:3128",
    ],
)
def test_seal_hides_the_user_info_keeps_the_host_and_opens_again(url):
    sealed = proxyurl.seal(url, CIPHER.encrypt)
    assert sealed != url and proxyurl.is_sealed(sealed) and not proxyurl.has_credentials(sealed)
    assert url.rpartition("@")[0].split("://")[1] not in sealed
    assert sealed.endswith("@" + url.rpartition("@")[2]) and proxyurl.check(sealed) == sealed
    assert proxyurl.mask(sealed) == proxyurl.mask(url)  # "unchanged" works on either form
    assert proxyurl.keep_stored(proxyurl.mask(url), sealed) == sealed
    assert proxyurl.seal(sealed, CIPHER.encrypt) == sealed
    assert proxyurl.unseal(sealed, CIPHER.decrypt) == url


def test_values_without_credentials_pass_through_and_a_wrong_key_does_not_open():
    for value in ("", "direct", "http://proxy:3128"):
        assert proxyurl.seal(value, CIPHER.encrypt) == value == proxyurl.unseal(value, CIPHER.decrypt)
    sealed = proxyurl.seal("http://u:p@proxy:3128", CIPHER.encrypt)
    with pytest.raises(DecryptionFailed):
        proxyurl.unseal(sealed, Cipher(b"x" * 32).decrypt)


def test_direct_is_accepted_any_case_and_overrides_the_system_proxy():
    assert proxyurl.check(" Direct ") == "direct" and proxyurl.mask("direct") == "direct"
    system = {"proxy_url": "http://proxy:3128"}
    assert Settings.resolve(system, {"proxy_url": "direct"}).proxy_url == ""
    assert Settings.resolve(system, {}).proxy_url == "http://proxy:3128"
    assert Settings.resolve({"proxy_url": "direct"}).proxy_url == ""
    assert proxyurl.is_direct("") and proxyurl.is_direct("direct") and not proxyurl.is_direct("http://p:1")


def test_scrub_removes_user_info_from_any_text():
    text = (
        "ProxyError('Cannot connect to proxy socks5://bob:s3cr3t@h:1080') via http://a:b@c:1/x and user@example.com"
        " or http://eve:half@other-half@h2:3128"
    )
    out = proxyurl.scrub(text)
    assert "s3cr3t" not in out and "bob" not in out and ":b@" not in out
    assert "half" not in out and "http://****@h2:3128" in out
    assert "socks5://****@h:1080" in out and "http://****@c:1/x" in out and "user@example.com" in out
    assert "pw-9" not in repr(Settings.resolve({"proxy_url": "http://u:pw-9@proxy:3128"}))
