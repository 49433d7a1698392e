"""Parameters of the PII redaction stage (a modifier: same documents, text changed)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

PII_TYPES = (
    "email",
    "ipv4",
    "ipv6",
    "phone",
    "credit_card",
    "iban",
    "private_key",
    "aws_access_key",
    "bearer_token",
    "api_token",
)
DEFAULT_PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ipv4": "<IP_ADDRESS>",
    "ipv6": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
    "private_key": "<PRIVATE_KEY>",
    "aws_access_key": "<SECRET>",
    "bearer_token": "<SECRET>",
    "api_token": "<SECRET>",
}
# RFC 2606 / 6761 names reserved for documentation and tests.
DEFAULT_ALLOWED_DOMAINS = ["example.com", "example.org", "example.net", "example", "test", "invalid", "localhost"]
# Documentation (RFC 5737, RFC 3849), loopback, private (RFC 1918, RFC 4193), link-local,
# unspecified, multicast and broadcast addresses: none of them identifies a person.
DEFAULT_ALLOWED_NETWORKS = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/32",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]
TYPE_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class CustomPattern(CamelModel):
    """A user pattern: every match is replaced (no checksum)."""

    name: str = Field(pattern=TYPE_NAME)
    """Type name: the key in `pii_counts` and the statistics (must not be a built-in type)."""

    regex: str = Field(min_length=1, max_length=2000)
    """Regular expression in the syntax shared by Python's `re` and RE2 (no look-around, no
    back-references). Matched case-sensitively; use `(?i)` for case-insensitive. A named group
    `value` limits the replacement to that part (e.g. `token=(?P<value>\\w+)`)."""

    placeholder: str | None = Field(default=None, max_length=100)
    """Replacement text; default `<NAME>` (the name upper-cased)."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value, re.ASCII)
        except re.error as err:
            raise ValueError(f"invalid regular expression {value!r}: {err}") from None
        if set(compiled.groupindex) - {"value"}:
            raise ValueError("the only named group allowed is `value`")
        if compiled.match(""):
            raise ValueError(f"regular expression {value!r} matches the empty string")
        return value


class PiiRedactionParams(CamelModel):
    """Finds personal data and secrets and replaces each with a typed placeholder (`<EMAIL>`).

    Every document is kept; the text of those with a redaction changes, and `pii_counts` (a
    struct with one int32 per type) records what was replaced. Candidates are found with one
    combined RE2 pattern over whole shards (Arrow); only documents with a candidate are scanned
    in Python, where checksums (Luhn for cards, mod-97 for IBANs), address parsing and the allow
    lists decide. Recognised formats: e-mail addresses; IPv4 dotted quads; IPv6 (full or `::`
    compressed, at least three groups); phone numbers in international form (`+` and 8-15
    digits) and North American form (`(415) 555-0132`, `415-555-0132`); payment cards (13-19
    digits, optionally grouped by spaces or hyphens, Luhn-valid, with a Visa, Mastercard, Amex,
    Discover, JCB, Diners or UnionPay prefix); IBANs (country length and mod-97 checked); PEM
    and OpenSSH private key blocks; AWS access key ids; `Bearer` tokens; GitHub, GitLab, Slack,
    Google, Stripe tokens and JWTs."""

    types: list[Literal[PII_TYPES]] = Field(default_factory=lambda: list(PII_TYPES))  # type: ignore[valid-type]
    """Built-in types to redact (default: all)."""

    placeholders: dict[str, Annotated[str, Field(max_length=100)]] = Field(default_factory=dict)
    """Replacement per type, overriding the defaults (`<EMAIL>`, `<IP_ADDRESS>`, `<PHONE>`,
    `<CREDIT_CARD>`, `<IBAN>`, `<PRIVATE_KEY>`, `<SECRET>`)."""

    action: Literal["redact", "annotate"] = "redact"
    """`redact` replaces what it finds; `annotate` only counts (`pii_counts`), leaving texts unchanged."""

    allowed_domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_DOMAINS)
    )
    """E-mail domains never redacted (a domain matches itself and its subdomains); default: the
    names reserved for documentation (`example.com`, `.test`, `.invalid`, `localhost`, ...)."""

    allowed_networks: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_NETWORKS)
    )
    """IP networks (CIDR) never redacted; default: documentation ranges (RFC 5737, RFC 3849),
    loopback, private, link-local, unspecified, multicast and broadcast addresses."""

    allowed_values: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list)
    """Exact matches never redacted (e.g. a project's public contact address)."""

    custom: list[CustomPattern] = Field(default_factory=list, max_length=64)
    """Extra patterns, redacted after the built-in types."""

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allowedNetworks: {net!r} is not an IP network (e.g. 192.0.2.0/24)") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> PiiRedactionParams:
        names = [c.name for c in self.custom]
        clash = sorted({n for n in names if n in PII_TYPES or names.count(n) > 1})
        if clash:
            raise ValueError(f"custom pattern names must be new and unique: {', '.join(clash)}")
        unknown = sorted(set(self.placeholders) - set(PII_TYPES) - set(names))
        if unknown:
            raise ValueError(f"placeholders for unknown type(s) {', '.join(unknown)}; types: {', '.join(PII_TYPES)}")
        if not self.types and not self.custom:
            raise ValueError("nothing to find: `types` is empty and there is no custom pattern")
        return self

    def all_types(self) -> list[str]:
        return [*self.types, *(c.name for c in self.custom)]

    def placeholder(self, kind: str) -> str:
        if kind in self.placeholders:
            return self.placeholders[kind]
        for c in self.custom:
            if c.name == kind:
                return c.placeholder or f"<{kind.upper()}>"
        return DEFAULT_PLACEHOLDERS[kind]

    def describe(self) -> list[str]:
        what = "counts" if self.action == "annotate" else "redacts"
        return [
            f"{what} {', '.join(f'{t} -> {self.placeholder(t)}' for t in self.all_types())}",
            f"allow lists: {len(self.allowed_domains)} domain(s), {len(self.allowed_networks)} network(s), "
            f"{len(self.allowed_values)} value(s); annotates pii_counts",
        ]


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="pii-redaction",
    order=10,
    params=PiiRedactionParams,
    title="PII redaction: typed placeholders for e-mails, IPs, phones, cards, IBANs and secrets",
    steps=(StepDef("redact", MAP),),
    impl="curation.stages.pii:PiiRedactionStage",
    produces=None,
)
