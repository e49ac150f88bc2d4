"""PII redaction: every kind becomes its typed placeholder; look-alikes are left alone."""

from __future__ import annotations

import pytest

from tokensmith.trainer.data.pii import PII_KINDS, PLACEHOLDERS, PIIRedactor, luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail jane.roe@example.org now", "email"),
        ("call (415) 555-2671 now", "phone"),
        ("call 415-555-2671 now", "phone"),
        ("call +44 20 7946 0958 now", "phone"),
        ("call +14155552671 now", "phone"),
        ("card 4111 1111 1111 1111 now", "credit_card"),
        ("card 4111111111111111 now", "credit_card"),
        ("amex 3782 822463 10005 now", "credit_card"),
        ("ssn 078-05-1120 now", "national_id"),
        ("nino AB 12 34 56 C now", "national_id"),
        ("host 8.8.8.8 now", "ip_address"),
        ("host 2001:4860:4860::8888 now", "ip_address"),
    ],
)
def test_each_kind_is_redacted_with_its_placeholder(text: str, kind: str) -> None:
    out, counts = redact(text)
    assert counts == {kind: 1}, (text, out)
    assert out.startswith(text.split()[0] + " " + PLACEHOLDERS[kind])
    assert out.endswith(" now")


@pytest.mark.parametrize(
    "text",
    [
        "Python version 3.11.4",
        "released on 2024-01-15",
        "ISBN 978-3-16-148410-0",
        "ISBN 0306406152",
        "router 192.168.1.1 and loopback 127.0.0.1",
        "order 4111-1111-1111-1112",  # fails Luhn
        "v1.2.3.4 of the library",
        "slice a[::2] and time 12:30:45",
        "ratio 3.14159 and 1,000,000 people",
        "ssn-like 000-12-3456 and 666-12-3456",
        "format '+000000120' in a table",
    ],
)
def test_lookalikes_are_kept(text: str) -> None:
    assert redact(text) == (text, {})


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("9783161484100")  # the ISBN-13 in the look-alikes
    assert not luhn_valid("12a4")


def test_kinds_can_be_switched_off() -> None:
    text = "mail jane.roe@example.org or call 415-555-2671"
    out, counts = PIIRedactor(["phone"]).redact(text)
    assert "jane.roe@example.org" in out and "<PHONE>" in out and counts == {"phone": 1}
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PIIRedactor(["passport"])


def test_private_ips_redacted_when_asked() -> None:
    out, counts = PIIRedactor(["ip_address"], public_ips_only=False).redact("router 192.168.1.1 ok")
    assert out == "router <IP_ADDRESS> ok" and counts == {"ip_address": 1}


def test_every_kind_has_a_placeholder() -> None:
    assert set(PLACEHOLDERS) == set(PII_KINDS)
