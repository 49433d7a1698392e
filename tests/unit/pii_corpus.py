"""A seeded PII test corpus: planted values of every type in natural settings, plus hard negatives.

Each document comes with the values planted in it, `(type, value)`. Positives are random but
valid (Luhn-valid cards with real issuer prefixes, IBANs with correct check digits, public IP
addresses); they sit in the kinds of text where PII occurs (e-mail signatures, server logs,
config files, git metadata, forms). `MISSED` formats are planted too but not recognised by
design (national phone numbers without a country code, obfuscated addresses): they count
against recall. Negatives look like PII to a careless pattern: versions, section numbers, OIDs,
dates, times, ISBNs, UUIDs, hashes, C++ scopes, non-Luhn digit runs, documentation addresses.
"""

from __future__ import annotations

import random
import string

FIRST = ["maria", "john", "li", "ahmed", "sofia", "lukas", "chen", "amara", "igor", "ines", "kenji", "zoe"]
LAST = ["rossi", "smith", "wang", "hassan", "garcia", "muller", "kim", "okafor", "petrov", "silva", "sato"]
DOMAINS = ["gmail.com", "unimi.it", "posteo.de", "mail.ru", "outlook.fr", "uni-heidelberg.de", "acme-corp.io"]
MISSED = ("phone_national", "email_obfuscated")


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban(country: str, length: int, rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def grouped(value: str, sep: str, size: int = 4) -> str:
    return sep.join(value[i : i + size] for i in range(0, len(value), size))


def public_ipv4(rng: random.Random) -> str:
    while True:
        a = rng.choice([23, 31, 45, 62, 81, 91, 104, 151, 185, 193, 212])
        ip = f"{a}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return ip


def public_ipv6(rng: random.Random) -> str:
    groups = [rng.choice(["2a00", "2a02", "2604", "2001"])] + [
        f"{rng.randint(0, 0xFFFF):x}" for _ in range(3)
    ]
    return ":".join(groups) + f"::{rng.randint(1, 0xFFFF):x}"


def token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first.title()} {last.title()}", f"{first}.{last}@{rng.choice(DOMAINS)}"


def phone_intl(rng: random.Random) -> str:
    return rng.choice([
        f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}",
        f"+49 30 {rng.randint(1000000, 99999999)}",
        f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        f"+1 ({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(2000, 9999)}",
        f"+81-3-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
        f"+39 06 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
    ])


def phone_na(rng: random.Random) -> str:
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(2000, 9999)
    return rng.choice([f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}"])


def card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("35", 16), ("4", 13)])
    if prefix == "35":
        prefix = str(rng.randint(3528, 3589))
    digits = luhn_complete(prefix, length, rng)
    return rng.choice([digits, grouped(digits, " "), grouped(digits, "-")])


def make_iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IT", 27)])
    if country == "GB":
        value = iban(country, length, rng)
        value = value[:4] + "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + value[8:]
        # letters change the check digits: recompute over the final BBAN
        bban = value[4:]
        number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
        value = f"{country}{98 - number % 97:02d}{bban}"
    elif country == "NL":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + token(rng, 10, string.digits)
        number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
        value = f"{country}{98 - number % 97:02d}{bban}"
    else:
        value = iban(country, length, rng)
    return rng.choice([value, grouped(value, " ")])


def private_key(rng: random.Random) -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    body = "\n".join(token(rng, 64, string.ascii_letters + string.digits + "+/") for _ in range(rng.randint(3, 8)))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


def positives(rng: random.Random) -> list[tuple[str, list[tuple[str, str]]]]:
    """One document per template: (text, planted values)."""
    name, email = person(rng)
    ip4, ip6 = public_ipv4(rng), public_ipv6(rng)
    intl, na = phone_intl(rng), phone_na(rng)
    cc, ib = card(rng), make_iban(rng)
    aws_id = "AKIA" + token(rng, 16, string.ascii_uppercase + string.digits)
    aws_secret = token(rng, 40, string.ascii_letters + string.digits + "/+")
    gh = "ghp_" + token(rng, 36)
    slack = "xoxb-" + token(rng, 12, string.digits) + "-" + token(rng, 24)
    bearer = token(rng, 40, string.ascii_letters + string.digits + "-_.")
    jwt = "eyJ" + token(rng, 30) + ".eyJ" + token(rng, 40) + "." + token(rng, 43)
    key = private_key(rng)
    national = f"030 {rng.randint(1000000, 9999999)}"
    hidden = email.replace("@", " at ").replace(".", " dot ")
    return [
        (f"Best regards,\n{name}\nTel. {intl}\n{email}\n", [("phone", intl), ("email", email)]),
        (f"Questions? Call us at {na} or write to {email}.", [("phone", na), ("email", email)]),
        (f'{ip4} - - [10/Oct/2023:13:55:36 -0700] "GET /index.html HTTP/1.1" 200 2326', [("ipv4", ip4)]),
        (f"The server listens on {ip6} (port 443) and on {ip4}.", [("ipv6", ip6), ("ipv4", ip4)]),
        (f"Payment received with card {cc}, expiry 04/27. Thank you for your order.", [("credit_card", cc)]),
        (f"Please transfer the deposit to IBAN {ib} before Friday.", [("iban", ib)]),
        (f"[default]\naws_access_key_id = {aws_id}\naws_secret_access_key = {aws_secret}\nregion = eu-west-1\n",
         [("aws_access_key", aws_id), ("aws_access_key", aws_secret)]),
        (f"export GITHUB_TOKEN={gh}\nexport SLACK_TOKEN={slack}\n", [("api_token", gh), ("api_token", slack)]),
        (f'curl -H "Authorization: Bearer {bearer}" https://api.service.io/v1/items', [("bearer_token", bearer)]),
        (f"session={jwt}; Path=/; HttpOnly", [("api_token", jwt)]),
        (f"Here is my deploy key, do not share:\n{key}\nthanks", [("private_key", key)]),
        (f"commit 3f2a9c1\nAuthor: {name} <{email}>\nDate: Mon Oct 2 2023\n\n    Fix typo", [("email", email)]),
        (f"Ring me on {national} after six.", [("phone_national", national)]),
        (f"Contact: {hidden}", [("email_obfuscated", hidden)]),
    ]


NEGATIVES = [
    "Requires Python 3.11.7 and numpy 2.4.6; tested on Debian 12.2.0-14.",
    "As described in RFC 7231 section 7.1.1.1, the date format is fixed. See also version 1.2.3.4 notes.",
    "The OID 1.3.6.1.4.1.311.21.7 identifies a certificate template.",
    "Meeting on 2024-05-12 at 12:30:45; the build took 00:01:23.",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2 are both valid.",
    "Order 1234567890123456 was shipped (the tracking number is 9400111899223197428490).",
    "UUID 123e4567-e89b-12d3-a456-426614174000, sha 9fceb02d0ae598e95dc970b74767f19372d61af8.",
    "In C++ write std::map<int, int> m; and a::b::c(); or std::vector<T>::iterator.",
    "Write to info@example.com or admin@test.example.org; the server is at 192.0.2.44 and 2001:db8::10.",
    "In films every number is like 555-0123 or (212) 555-0142, reserved for fiction.",
    "Loopback 127.0.0.1, private 10.1.2.3 and 192.168.0.10 are not personal; nor is ::1 or fe80::1.",
    "The price is $1,299.99 or 1 299,99 EUR; population 83 240 525 in 2021.",
    "Coordinates 48.8566, 2.3522; temperature 21.5 C; ratio 3:2:1.",
    "Use @decorator or @user mentions; the regex [a-z]+@[a-z]+ is not an address.",
    "Bearer bonds were common in the 19th century; the bearer of this letter is a friend.",
    "Key sizes: 2048-bit RSA; the AKIA prefix marks AWS access keys.",
    "The sequence 4111 1111 1111 1112 fails the Luhn check; so does 1234 5678 9012 3456.",
    "Phone numbers in tables: 12 345 678 901 234 and 2021-2022-2023.",
    "The MAC address 00:1A:2B:3C:4D:5E and the time 10:20:30:40 are not IPv6 addresses.",
    "Timestamps like 1700000000000 and build ids like 20231002123456 are numbers.",
]


def build_corpus(seed: int = 0, rounds: int = 20) -> list[tuple[str, list[tuple[str, str]]]]:
    rng = random.Random(seed)
    docs: list[tuple[str, list[tuple[str, str]]]] = []
    for _ in range(rounds):
        docs.extend(positives(rng))
    docs.extend((text, []) for text in NEGATIVES)
    return docs
