"""Build tests/model/data/django_translations.jsonl: real text in 30 languages for language ID.

Source: the message catalogues (`django.po`) of Django 5.1.4 (BSD-3-Clause, Django Software
Foundation and individual contributors), human translations of Django's own English messages.
Usage (the wheel is fetched from PyPI by pip; nothing is imported):

    pip download --no-deps django==5.1.4 -d /tmp/dj
    python scripts/build-lid-fixture.py /tmp/dj/Django-5.1.4-py3-none-any.whl

Per language: the 40 first translated messages of at least 25 characters (12 in Chinese, Japanese, Korean; sorted by message
id, placeholders and markup removed) as `string` rows, and 8 `paragraph` rows of 5 further
messages each joined by spaces, a document-sized text.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

# Django locale folder -> fastText lid.176 code.
LANGUAGES = {
    "ar": "ar", "bg": "bg", "ca": "ca", "cs": "cs", "da": "da", "de": "de", "el": "el", "es": "es",
    "et": "et", "fa": "fa", "fi": "fi", "fr": "fr", "he": "he", "hi": "hi", "hu": "hu", "id": "id",
    "it": "it", "ja": "ja", "ko": "ko", "lt": "lt", "nl": "nl", "pl": "pl", "pt": "pt", "ro": "ro",
    "ru": "ru", "sk": "sk", "sv": "sv", "tr": "tr", "uk": "uk", "zh_Hans": "zh",
}
CATALOGUES = ("conf", "contrib/admin", "contrib/auth", "contrib/admindocs", "contrib/humanize",
              "contrib/contenttypes", "contrib/sites", "contrib/flatpages", "contrib/redirects",
              "contrib/sessions", "contrib/messages", "contrib/postgres", "contrib/sitemaps",
              "contrib/gis", "core")
STRINGS, PARAGRAPHS, PER_PARAGRAPH, MIN_CHARS = 40, 8, 5, 25
PLACEHOLDER = re.compile(r"%\([^)]*\)[sdr]|%[sdr]|\{[^}]*\}|<[^>]+>|&[a-z]+;")


def unquote(line: str) -> str:
    return json.loads(line) if line.startswith('"') else ""


def messages(po: str) -> dict[str, str]:
    """msgid -> msgstr of the singular, non-fuzzy, translated entries."""
    out: dict[str, str] = {}
    for entry in po.split("\n\n"):
        if "#, fuzzy" in entry or "msgid_plural" in entry or "msgctxt" in entry:
            continue
        field, parts = None, {"msgid": "", "msgstr": ""}
        for raw in entry.splitlines():
            line = raw.strip()
            if line.startswith(("msgid ", "msgstr ")):
                field, value = line.split(" ", 1)
                parts[field] = unquote(value)
            elif line.startswith('"') and field:
                parts[field] += unquote(line)
        if parts["msgid"] and parts["msgstr"]:
            out[parts["msgid"]] = parts["msgstr"]
    return out


def clean(text: str) -> str:
    return " ".join(PLACEHOLDER.sub(" ", text).split())


def main(wheel: str) -> None:
    rows = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for folder, code in LANGUAGES.items():
            found: dict[str, str] = {}
            for cat in CATALOGUES:
                name = f"django/{cat}/locale/{folder}/LC_MESSAGES/django.po"
                if name in names:
                    found.update(messages(z.read(name).decode("utf-8")))
            texts = list(dict.fromkeys(clean(found[k]) for k in sorted(found)))
            least = MIN_CHARS // 2 if code in ("ja", "ko", "zh") else MIN_CHARS  # denser scripts
            texts = [t for t in texts if len(t) >= least]
            need = STRINGS + PARAGRAPHS * PER_PARAGRAPH
            if len(texts) < need:
                raise SystemExit(f"{folder}: only {len(texts)} usable messages")
            rows += [{"lang": code, "kind": "string", "text": t} for t in texts[:STRINGS]]
            rest = texts[STRINGS:need]
            rows += [{"lang": code, "kind": "paragraph", "text": " ".join(rest[i:i + PER_PARAGRAPH])}
                     for i in range(0, len(rest), PER_PARAGRAPH)]
    out = Path(__file__).resolve().parent.parent / "tests" / "model" / "data" / "django_translations.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows ({len(LANGUAGES)} languages) to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
