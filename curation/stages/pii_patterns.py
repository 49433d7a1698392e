"""PII and secret patterns, and the checks that decide whether a match is real.

Each pattern is written in the syntax that Python's `re` (with `re.ASCII`) and RE2 (Arrow's
regex engine) read the same way: no look-around, no back-references. Arrow finds and marks every
candidate span of a batch with one combined pattern; Python then only classifies each marked
span (the first type whose own pattern matches exactly there) and runs its check: Luhn for
cards, mod-97 for IBANs, address parsing and allow lists, number context (a dotted quad inside a
longer dotted number is not an address).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Order matters: where two types match at the same place the first one listed wins.
PATTERNS: dict[str, str] = {
    "private_key": (
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
        r"|[A-Za-z0-9+/=\s]*)"
    ),
    "aws_access_key": (
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|AKPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"
        r"|(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+]{40})"
    ),
    "bearer_token": r"\b[Bb]earer +(?P<value>[A-Za-z0-9._~+/-]{20,}=*)",
    "api_token": (
        r"\bgh[pousr]_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b|\bglpat-[A-Za-z0-9_-]{20}\b"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,250}\b|\bAIza[0-9A-Za-z_-]{35}\b|\b[rs]k_live_[0-9A-Za-z]{20,250}\b"
        r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{40,250}\b"
        r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    ),
    "email": r"\b[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b",
    "iban": r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
    "credit_card": r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
    "ipv6": r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}",
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b",
    "phone": (
        r"\+[1-9][0-9 ().-]{6,20}[0-9]"
        r"|\(?\b[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-][0-9]{4}\b"
    ),
}

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
NUMBER_SEPARATORS = " .-"
# A dotted quad right after one of these words is a section or version number, not an address.
NUMBERING_WORD = re.compile(r"(?i)(?:section|sec\.?|chapter|clause|rule|step|version|ver\.?|release|rfc|v|§)[\s#:.-]*$")

# A verdict on one candidate: the [start, end) to replace, "keep" (real but allowed: skip it),
# or None (not of this type: the next type may claim the span).
KEEP = "keep"
Verdict = tuple[int, int] | str | None


@dataclass
class Allow:
    """Allow lists: e-mail domains, IP networks, exact values."""

    domains: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    values: frozenset[str] = field(default_factory=frozenset)

    def domain(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return any(d == a or d.endswith("." + a) for a in self.domains)

    def address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is judged as a.b.c.d
        return any(ip.version == n.version and ip in n for n in self.networks)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand_ok(digits: str) -> bool:
    """An issuer prefix with one of its lengths (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay)."""
    n, p2, p3, p4, p6 = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    return (
        (digits[0] == "4" and n in (13, 16, 19))
        or ((51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16)
        or (p2 in (34, 37) and n == 15)
        or ((p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925) and 16 <= n <= 19)
        or (3528 <= p4 <= 3589 and 16 <= n <= 19)
        or ((300 <= p3 <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19)
        or (p2 == 62 and 16 <= n <= 19)
    )


def iban_ok(compact: str) -> bool:
    """Country length and the ISO 7064 mod-97 check of a compact (no spaces) IBAN."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _inside_number(text: str, start: int, end: int) -> bool:
    """A number span that is only part of a longer run of digit groups (an id, a table row)."""
    before = text[start - 2 : start] if start >= 2 else ""
    after = text[end : end + 2]
    return (len(before) == 2 and before[1] in NUMBER_SEPARATORS and before[0].isdigit()) or (
        len(after) == 2 and after[0] in NUMBER_SEPARATORS and after[1].isdigit()
    )


def check_email(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    domain = m.group(0).rsplit("@", 1)[1]
    return KEEP if allow.domain(domain) else m.span()


def check_ipv4(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    start, end = m.span()
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    if (before.endswith(".") and before[:1].isdigit()) or (after.startswith(".") and after[1:2].isdigit()):
        return None  # inside a longer dotted number (an OID, a version)
    if NUMBERING_WORD.search(text[max(0, start - 12) : start]):
        return None  # `section-7.1.1.1`, `version 1.2.3.4`
    ip = ipaddress.IPv4Address(m.group(0))
    return KEEP if allow.address(ip) else m.span()


def check_ipv6(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    start, end = m.span()
    s = m.group(0)
    prev, nxt = text[start - 1 : start], text[end : end + 1]
    if (prev and (prev.isalnum() or prev in ":_")) or (nxt and (nxt.isalnum() or nxt in ":_")):
        return None
    groups = [g for g in s.split(":") if g]
    if len(groups) < 3 or not any(c.isdigit() for c in s):
        return None  # `a::b`, `std::map`, `dead:beef`: code, not addresses
    try:
        ip = ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return KEEP if allow.address(ip) else m.span()


def check_phone(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    s = m.group(0)
    start, end = m.span()
    digits = "".join(c for c in s if c.isdigit())
    if s.startswith("+"):
        joined = s.replace(") ", ")").replace(" (", "(")
        if not 8 <= len(digits) <= 15 or re.search(r"[ .()-]{2}", joined) or s.count("(") != s.count(")"):
            return None
    else:
        if s.count("(") != s.count(")"):
            if s.startswith("("):
                return None
            end = start + s.index(")")  # `555-0132)`: the closing bracket is not part of it
        if digits[3:6] == "555" and digits[6:8] == "01":
            return KEEP  # NANP 555-0100..0199: reserved for fiction and examples
    if _inside_number(text, start, end):
        return None
    return (start, end)


def check_credit_card(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    s = m.group(0)
    seps = {c for c in s if not c.isdigit()}
    if len(seps) > 1:
        return None
    digits = "".join(c for c in s if c.isdigit())
    if len(set(digits)) == 1 or not card_brand_ok(digits) or not luhn_ok(digits):
        return None
    if _inside_number(text, *m.span()):
        return None
    return m.span()


def check_iban(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    s = m.group(0)
    length = IBAN_LENGTHS.get(s[:2])
    if length is None:
        return None
    count = 0
    for i, c in enumerate(s):  # the pattern may run into a following word: cut at the country's length
        if c != " ":
            count += 1
            if count == length:
                compact = s[: i + 1].replace(" ", "")
                nxt = s[i + 1 : i + 2]
                if nxt and nxt != " ":
                    return None
                return (m.start(), m.start() + i + 1) if iban_ok(compact) else None
    return None


def check_value(text: str, m: re.Match[str], allow: Allow) -> Verdict:
    """Secrets and custom patterns: the `value` group when the pattern has one."""
    if "value" in m.re.groupindex and m.group("value") is not None:
        return m.span("value")
    return m.span()


CHECKS: dict[str, Callable[[str, re.Match[str], Allow], Verdict]] = {
    "email": check_email,
    "ipv4": check_ipv4,
    "ipv6": check_ipv6,
    "phone": check_phone,
    "credit_card": check_credit_card,
    "iban": check_iban,
}


def combined_pattern(patterns: list[str]) -> str:
    """One RE2 alternation of every type's pattern (groups made non-capturing)."""
    return "|".join(f"(?:{p.replace('(?P<value>', '(?:')})" for p in patterns)
