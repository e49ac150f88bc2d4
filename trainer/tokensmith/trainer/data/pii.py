"""PII detection and redaction with typed placeholders: pure functions over text, no I/O.

Each kind of personal data is found by a regular expression and then *validated*, so look-alikes
survive: card numbers must pass the Luhn checksum (ISO/IEC 7812-1, Annex B) and be grouped like a card;
IP addresses must parse and be globally routable (private and documentation ranges stay, as in
datatrove's `PIIFormatter`, whose e-mail expression we reuse); US social security numbers must use an
issued area/group/serial (SSA, "Social Security Number Randomization", 2011); phone numbers need the
separators people write, so a bare 10-digit ISBN or a date is not a phone number.

Matches are replaced by `<EMAIL>`, `<PHONE>`, `<IP_ADDRESS>`, `<CREDIT_CARD>` and `<NATIONAL_ID>`
(typed placeholders, as in the BigScience ROOTS and StarCoder pipelines), so a model learns the shape
of the text without the data.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PII_KINDS = ("email", "credit_card", "national_id", "phone", "ip_address")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "national_id": "<NATIONAL_ID>",
    "phone": "<PHONE>",
    "ip_address": "<IP_ADDRESS>",
}

# datatrove's PIIFormatter e-mail expression (RFC 5322 local part, domain or bracketed IP literal).
_EMAIL = (
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
# 13-19 digits, optionally in groups separated by one space or hyphen.
_CARD = r"(?<![\w-])\d{4}(?:[ -]?\d{2,7}){2,4}(?![\w-])"
_SSN = r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])"
# UK National Insurance number (HMRC NIM39110 prefix rules).
_NINO = r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
# North American numbers with separators, and international numbers with a leading +.
_PHONE_NANP = r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])"
_PHONE_INTL = r"(?<![\w+])\+[1-9]\d{0,2}(?:(?:[ .-]\(?\d{1,6}\)?){2,5}|\d{7,12})(?![\w-])"
_IPV4 = r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\.?\d)(?!\w)"
_IPV6 = r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}(?::|[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{1,4}){0,6}(?![\w:])"
_VERSION_CONTEXT = re.compile(r"(?i)(?:version|ver\.?|release|v)\s*$")
_ISBN_CONTEXT = re.compile(r"(?i)isbn(?:-1[03])?:?\s*$")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of ISO/IEC 7812-1: double every second digit from the right."""
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_ok(match: re.Match[str], text: str) -> bool:
    raw = match.group(0)
    digits = re.sub(r"[ -]", "", raw)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    if _ISBN_CONTEXT.search(text[max(0, match.start() - 12) : match.start()]):
        return False
    separators = set(re.findall(r"[ -]", raw))
    if len(separators) > 1:
        return False
    if separators:  # grouped like a card: 4-4-4-4(-3), 4-6-4 / 4-6-5 (Amex, Diners)
        groups = [len(g) for g in re.split(r"[ -]", raw)]
        if groups[:-1] != [4] * (len(groups) - 1) and groups not in ([4, 6, 4], [4, 6, 5]):
            return False
    return True


def _ssn_ok(match: re.Match[str], text: str) -> bool:
    area, group, serial = match.group(1), match.group(2), match.group(3)
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _phone_intl_ok(match: re.Match[str], text: str) -> bool:
    return 8 <= sum(c.isdigit() for c in match.group(0)) <= 15


def _ip_ok(public_only: bool) -> Callable[[re.Match[str], str], bool]:
    def check(match: re.Match[str], text: str) -> bool:
        try:
            address = ipaddress.ip_address(match.group(0))
        except ValueError:
            return False
        if _VERSION_CONTEXT.search(text[max(0, match.start() - 10) : match.start()]):
            return False
        return address.is_global or not public_only

    return check


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[re.Match[str], str], bool] | None = None


def _rules(public_ips_only: bool) -> tuple[_Rule, ...]:
    # Order matters: longer, more specific shapes first so a card number is never half a phone number.
    ip_ok = _ip_ok(public_ips_only)
    return (
        _Rule("email", re.compile(_EMAIL)),
        _Rule("credit_card", re.compile(_CARD), _card_ok),
        _Rule("national_id", re.compile(_SSN), _ssn_ok),
        _Rule("national_id", re.compile(_NINO)),
        _Rule("phone", re.compile(_PHONE_INTL), _phone_intl_ok),
        _Rule("phone", re.compile(_PHONE_NANP)),
        _Rule("ip_address", re.compile(_IPV4), ip_ok),
        _Rule("ip_address", re.compile(_IPV6), ip_ok),
    )


class PIIRedactor:
    """Redacts the enabled kinds; `redact` returns the new text and how many of each kind it replaced."""

    def __init__(self, kinds: Sequence[str] = PII_KINDS, public_ips_only: bool = True) -> None:
        unknown = set(kinds) - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {', '.join(PII_KINDS)}")
        self.rules = tuple(r for r in _rules(public_ips_only) if r.kind in kinds)

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for rule in self.rules:
            text = self._apply(rule, text, counts)
        return text, counts

    @staticmethod
    def _apply(rule: _Rule, text: str, counts: Counter[str]) -> str:
        def replace(match: re.Match[str]) -> str:
            if rule.valid is not None and not rule.valid(match, text):
                return match.group(0)
            counts[rule.kind] += 1
            return PLACEHOLDERS[rule.kind]

        return rule.pattern.sub(replace, text)


def redact(text: str, kinds: Sequence[str] = PII_KINDS) -> tuple[str, Counter[str]]:
    """Convenience: redact every enabled kind with default settings."""
    return PIIRedactor(kinds).redact(text)
