from __future__ import annotations

from gptload.keypool.keytext import describe_rejected, mask, parse_keys, scrub

K1 = "AIza" + "A" * 35
K2 = "AIza" + "b1_-" * 8 + "xyz"
K3 = "AIza" + "C" * 35


def test_splits_on_every_separator_and_dedupes():
    parsed = parse_keys(f"{K1}\n{K2}, {K3};{K1}\t\r\n  {K2}")
    assert parsed.valid == (K1, K2, K3)
    assert parsed.duplicates_in_text == 2
    assert parsed.rejected == ()


def test_rejects_malformed_keys_and_shows_them_masked():
    too_short = "AIza123"
    wrong_prefix = "BIza" + "A" * 35
    bad_char = "AIza" + "A" * 34 + "!"
    parsed = parse_keys(f"{too_short} {wrong_prefix} {bad_char} {K1}")
    assert parsed.valid == (K1,)
    assert len(parsed.rejected) == 3
    assert wrong_prefix not in parsed.rejected and bad_char not in parsed.rejected


def test_mask_and_scrub():
    assert mask(K1) == "AIza...AAAA"
    assert mask("short") == "*****"
    assert scrub(f"key {K1} and {K2}.") == f"key {mask(K1)} and {mask(K2)}."
    assert parse_keys("").valid == ()


def test_scrub_secrets_masks_exact_values_and_key_shapes():
    from gptload.keypool.keytext import scrub_secrets

    odd = "not-shaped-like-a-gemini-key-0123"  # by exact value only
    shaped = "AIza" + "B" * 35  # by shape, even when not in the set
    text = f"a {odd} b api_key:{shaped}, c {odd}x".encode()
    out = scrub_secrets(text, {odd}).decode()
    assert odd not in out.replace(f"{odd}x", "") and shaped not in out
    assert out.count("not-...0123") == 1 and "AIza...BBBB" in out
    assert f"{odd}x" in out  # a longer token is another value


def test_rejected_tokens_come_with_their_line_and_a_masked_form_never_the_token():
    good = "AIza" + "A" * 35
    near = "AIza" + "B" * 34  # one character short
    parsed = parse_keys(f"{good}\r\nfoo bar\n\n{near};{good}\n\tab")
    assert parsed.valid == (good,) and parsed.duplicates_in_text == 1
    assert parsed.rejected_lines == (
        (2, "*** (3 characters)"),
        (2, "*** (3 characters)"),
        (4, "AIza...BBBB (38 characters)"),
        (5, "** (2 characters)"),
    )
    assert describe_rejected("proxy-key-123") == "prox...-123 (13 characters)"
    assert describe_rejected("secret1") == "se*** (7 characters)"
    assert all(near not in text for _, text in parsed.rejected_lines)
