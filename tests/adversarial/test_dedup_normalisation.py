"""Hardening items 7 and 8, end to end through `thresher run`: what dedup must not merge, and the
near-duplicates it must find in scripts written without spaces and in other Unicode spellings."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.adversarial.support import thresher, write_parquet, write_spec
from tests.unit.test_text_normalisation import FR, JA, ZH

pytestmark = pytest.mark.adversarial


def _run(tmp: Path, texts: list[str], stages: list[dict]) -> dict[str, tuple[str, str | None]]:
    """Run `stages` over `texts` (ids t00, t01, ...); every document's (reason, dup_of)."""
    ids = [f"t{i:02d}" for i in range(len(texts))]
    write_parquet(tmp / "in" / "part-0.parquet", {"doc_id": ids, "text": texts})
    spec = write_spec(tmp / "spec.yaml", tmp / "in", tmp / "out", stages)
    result = thresher("run", str(spec))
    assert result.code == 0, result.err
    fate = {r["doc_id"]: ("kept", None) for r in pq.read_table(tmp / "out" / "data").to_pylist()}
    for r in pq.read_table(tmp / "out" / "rejected").to_pylist():
        fate[r["doc_id"]] = (r["reason"], r.get("dup_of"))
    assert sorted(fate) == ids and json.loads((tmp / "out" / "summary.json").read_text())["conservation"]["holds"]
    return fate


SYMBOLIC = [
    "x = a + b;",
    "x = a - b;",
    "if (n < 0) return -1;",
    "if (n > 0) return -1;",
    "",
    "   ",
    "\n\t\n",
    "🙂🙂🙂",
    "🚀🚀🚀",
    "!!!",
    "???",
]


def test_item7_code_emoji_and_empty_documents_are_not_duplicates(tmp_path: Path) -> None:
    """Before the fix: `x = a - b;` was an exact duplicate of `x = a + b;`, and the empty,
    whitespace, emoji and punctuation-only documents all merged into one group (exact) and one
    shingle (MinHash)."""
    fate = _run(tmp_path, SYMBOLIC, [{"type": "exact-dedup"}])
    assert {doc: f for doc, f in fate.items() if f[0] != "kept"} == {}
    # MinHash shingles words (symbols separate them, as in FineWeb), so the two code lines are one
    # shingle apart only in exact dedup; but texts without any word have no shingle at all.
    fate = _run(tmp_path / "minhash", SYMBOLIC[4:], [{"type": "minhash-dedup"}])
    assert {doc: f for doc, f in fate.items() if f[0] != "kept"} == {}


def test_item7_strip_punctuation_is_the_documented_prose_mode(tmp_path: Path) -> None:
    fate = _run(tmp_path, ["Hello, world!", "hello world", "x = a + b;", "x = a - b;", "!!!", "???"],
                [{"type": "exact-dedup", "params": {"normalize": "strip-punctuation"}}])
    # Prose variants merge; operator-only differences do too (documented); symbol-only texts stay.
    assert fate == {"t00": ("kept", None), "t01": ("exact-duplicate", "t00"), "t02": ("kept", None),
                    "t03": ("exact-duplicate", "t02"), "t04": ("kept", None), "t05": ("kept", None)}


CJK = ("CJK UNIFIED", "HIRAGANA", "KATAKANA")


def _one_char_edit(text: str, at: int) -> str:
    chars = list(text)
    chars[at] = "宇" if chars[at] != "宇" else "宙"
    return "".join(chars)


@pytest.mark.parametrize("name", ["zh", "ja"])
def test_item8_cjk_documents_differing_in_one_character_are_near_duplicates(tmp_path: Path, name: str) -> None:
    """Before the fix: a whole CJK document was one word, so a one-character edit made it new."""
    # Only the CJK characters: 250-300 characters without a single space or punctuation mark.
    base = "".join(c for c in {"zh": ZH, "ja": JA}[name] if unicodedata.name(c, "").startswith(CJK))[:300]
    assert len(base) >= 250
    texts = [base, _one_char_edit(base, 150), FR]
    fate = _run(tmp_path, texts, [{"type": "minhash-dedup"}])
    assert fate == {"t00": ("kept", None), "t01": ("near-duplicate", "t00"), "t02": ("kept", None)}


def test_item8_nfc_and_nfd_spellings_are_duplicates(tmp_path: Path) -> None:
    """Before the fix: the NFD spelling of a French text was neither an exact nor a near duplicate."""
    nfc, nfd = unicodedata.normalize("NFC", FR), unicodedata.normalize("NFD", FR)
    assert nfc != nfd
    fate = _run(tmp_path, [nfc, nfd], [{"type": "minhash-dedup"}])
    assert fate["t01"] == ("near-duplicate", "t00")
    fate = _run(tmp_path / "exact", [nfc, nfd], [{"type": "exact-dedup"}])
    assert fate["t01"] == ("exact-duplicate", "t00")
