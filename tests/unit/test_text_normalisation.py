"""Text normalisation of the dedup stages: what exact and MinHash dedup consider the same text.

Regression tests for hardening items 7 (exact `full` merged code that differs in an operator, and
every empty, whitespace- or emoji-only document into one group) and 8 (MinHash merged emoji-only
documents, missed NFC/NFD twins, and treated Chinese, Japanese and unspaced Korean as one word per
clause), and the fast kernels against plain reference implementations.

Real CJK, Korean and French text: translations of kubectl's messages, from the Kubernetes project
(k8s.io/kubectl v0.37.2, pkg/util/i18n/translations/kubectl/{zh_CN,ja_JP,ko_KR,fr_FR}/LC_MESSAGES/
k8s.po, Apache License 2.0), copied here as they are.
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.params.dedup import ExactDedupParams, MinHashParams
from curation.stages import exact_math as em
from curation.stages import minhash_math as mm
from tests.helpers import reference_normalize

SAMPLE = sorted((Path(__file__).resolve().parents[2] / "examples/data/sample").glob("*.parquet"))

ZH = (
    "在不同的 API 版本之间转换配置文件。接受 YAML 和 JSON 格式。 这个命令以文件名, 目录, 或者 URL 作为输入，"
    "并通过 —output-version 参数 转换到指定版本的格式。如果没有指定目标版本或者所指定版本 不支持, 则转换为最新版本。"
    " 默认以 YAML 格式输出到标准输出。可以使用 -o option 修改目标输出的格式。"
    "创建具有指定名称的 ExternalName 服务。 ExternalName 服务引用外部 DNS 地址而不是 Pod 地址， "
    "这将允许应用程序作者引用存在于平台外、其他集群上或本地的服务。"
    "一组以逗号分隔的配额范围，必须全部匹配配额所跟踪的每个对象。一组以逗号分隔的资源=数量对，用于定义硬性限制。"
    "用于此服务的标签选择器。仅支持基于等值比较的选择器要求。如果为空（默认），则从副本控制器或副本集中推断选择器。）"
    "为服务所接受的其他外部 IP 地址（不由 Kubernetes 管理）。如果这个 IP 被路由到一个节点，除了其生成的服务 IP 外，"
    "还可以通过这个 IP 访问服务。针对所生成对象的内联 JSON 覆盖。如果这一对象是非空的，将用于覆盖所生成的对象。"
)
JA = (
    "異なるAPIバージョン間で設定ファイルを変換します。 YAML形式とJSON形式の両方を受け付けます。 このコマンドは、"
    "ファイル名、ディレクトリ、またはURLを入力として受け付け、それを--output-versionフラグで指定されたバージョンに変換します。"
    " バージョンが未指定またはサポート外であった場合、最新のバージョンに変換します。 既定の出力はYAML形式で標準出力に"
    "表示されます。-oオプションを使用することで、出力先を変更できます。ExternalName Serviceを指定された名前で作成します。"
    " ExternalName Serviceは、Podだけでなく外部DNSアドレスを参照できます。 これにより、アプリケーションの開発者は、"
    "プラットフォーム外、他のクラスター、またはローカルに存在するServiceを参照できるようになります。"
)
KO = [
    "kubeconfig에서 지정된 클러스터를 삭제합니다",
    "kubeconfig에서 지정된 컨텍스트를 삭제합니다",
    "하나 또는 여러 컨텍스트를 설명합니다",
    "kubeconfig에 정의된 클러스터를 표시합니다",
    "병합된 kubeconfig 설정 또는 지정된 kubeconfig 파일을 표시합니다",
    "kubeconfig 파일을 수정합니다",
    "자원에 대한 주석을 업데이트합니다",
    "구성을 파일 이름 또는 stdin에 의한 자원에 적용합니다",
    "현재-컨텍스트를 표시합니다",
    "kubeconfig에서 클러스터 항목을 설정합니다",
    "kubeconfig에서 컨텍스트 항목을 설정합니다",
    "kubeconfig에서 사용자 항목을 설정합니다",
    "kubeconfig 파일에서 단일값을 설정합니다",
    "kubeconfig 파일에서 현재-컨텍스트를 설정합니다",
    "kubeconfig 파일에서 단일값 설정을 해제합니다",
]
FR = (
    "Supprimer le cluster spécifié du kubeconfig. Supprimer le contexte spécifié du kubeconfig. "
    "Décrire un ou plusieurs contextes. Afficher les cluster définis dans kubeconfig. Afficher les "
    "paramètres fusionnés de kubeconfig ou d'un fichier kubeconfig spécifié. Mettre à jour les "
    "annotations d'une ressource. Définit un cluster dans kubeconfig. Définit un contexte dans "
    "kubeconfig. Définit un utilisateur dans kubeconfig. Définit une valeur individuelle dans un "
    "fichier kubeconfig. Définit le contexte courant dans un fichier kubeconfig."
)


def sample_texts() -> list[str]:
    return pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()


# ---- exact dedup: what counts as the same text ---------------------------------------------


def duplicate_groups(texts: list[str], mode: str) -> list[list[int]]:
    """Groups (of two or more) the exact-dedup stage forms: equal hashes among hashable texts."""
    hi, lo, hashable = em.exact_hashes(pa.array(texts, pa.string()), mode)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(hi.tolist(), lo.tolist(), strict=True)):
        if hashable[i]:
            groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def test_default_exact_normalisation_keeps_operators_and_symbols() -> None:
    code = ["x = a + b;", "x = a - b;", "X = A + B;", "x  =  a\t+ b;", "if (a < b) {", "if (a > b) {"]
    assert ExactDedupParams().normalize == "full"
    assert duplicate_groups(code, "full") == [[0, 2, 3]]  # case and whitespace only
    # The explicitly named prose mode still strips them, as the old `full` did.
    assert duplicate_groups(code, "strip-punctuation") == [[0, 1, 2, 3], [4, 5]]


def test_empty_whitespace_and_emoji_only_texts_form_no_group() -> None:
    texts = ["", "   ", "\n\t \u3000", "😀", "🎉", "😀", "!!!", "???"]
    for mode in ("whitespace", "full", "strip-punctuation"):
        hi, lo, hashable = em.exact_hashes(pa.array(texts), mode)
        assert not hashable[:3].any(), mode  # nothing left to compare
    assert duplicate_groups(texts, "full") == [[3, 5]]  # only the two equal emoji texts
    assert duplicate_groups(texts, "strip-punctuation") == []  # symbols removed: all empty
    assert duplicate_groups(texts, "none") == [[3, 5]]  # raw bytes: "" still has no content


def test_nfc_and_nfd_spellings_are_exact_duplicates() -> None:
    nfc, nfd = unicodedata.normalize("NFC", FR), unicodedata.normalize("NFD", FR)
    assert nfc != nfd
    for mode in ("full", "strip-punctuation"):
        assert duplicate_groups([nfc, nfd, FR.upper()], mode) == [[0, 1, 2]], mode
    assert duplicate_groups([nfc, nfd], "whitespace") == []  # only whitespace is normalised there


def _random_texts(seed: int, count: int = 3000) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("aAzZ09 .,;+-=(){}\t\n\r\x0b\x0c") + [
        "\u00a0", "\u3000", "\u2003", "\u2028", "\u2029", "\u1680", "\u202f", "\u205f", "\x1c", "\x85",
        "é", "É", "e\u0301", "ﬁ", "Ｈ", "ß", "😀", "中", "ア", "한", "  ", "\n\n", "Σ", "İ",
    ]  # fmt: skip
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(count)]


@pytest.mark.parametrize("mode", em.MODES)
def test_fast_exact_normalisation_equals_the_regex_definition(mode: str) -> None:
    texts = _random_texts(1) + sample_texts()[:500] + [ZH, JA, FR, " ".join(KO), "", " " * 300 + "x" + " " * 300]
    arr = pa.array(texts, pa.string())
    assert em.normalize_for_hash(arr, mode).to_pylist() == reference_normalize(arr, mode).to_pylist()
    hi, lo, hashable = em.exact_hashes(arr, mode, batch_bytes=2000)  # many small batches
    ref = reference_normalize(arr, mode)
    ref_hi, ref_lo = em.text_hashes(ref)
    assert np.array_equal(hi, ref_hi) and np.array_equal(lo, ref_lo)
    assert np.array_equal(hashable, pc.binary_length(ref).to_numpy() > 0)


def test_exact_hashes_take_any_column_shape() -> None:
    chunked = pa.chunked_array([["a  b", None], [], ["A B"]], pa.string())
    hi, lo, hashable = em.exact_hashes(chunked, "full")
    assert hi[0] == hi[2] and lo[0] == lo[2] and hashable.tolist() == [True, False, True]
    assert [len(x) for x in em.exact_hashes(pa.array([], pa.string()), "full")] == [0, 0, 0]
    with pytest.raises(ValueError, match="unknown normalisation"):
        em.exact_hashes(pa.array(["x"]), "fancy")


# ---- MinHash: units and shingles --------------------------------------------------------------


def _sigs(texts: list[str], num_perm: int = 256, **kw: object) -> np.ndarray:
    return mm.signatures(pa.array(texts, pa.string()), 5, num_perm, 1, **kw)  # type: ignore[arg-type]


def _candidates(sigs: np.ndarray, bands: int = 14, rows: int = 8) -> set[tuple[int, int]]:
    """Pairs sharing a band among the documents the stage buckets (those with shingles)."""
    sigs = sigs[:, : bands * rows]
    keep = mm.has_shingles(sigs)
    b = mm.band_hashes(sigs, bands, rows)
    return {(i, j) for i in range(len(b)) for j in range(i + 1, len(b)) if keep[i] and keep[j] and (b[i] == b[j]).any()}


def test_documents_without_units_have_no_shingles_and_match_nothing() -> None:
    texts = ["", "   \n", "😀😀😀", "🎉🎉", "?!... ---", "★☆★", "a real document with enough words in it"]
    sigs = _sigs(texts)
    assert mm.has_shingles(sigs).tolist() == [False] * 6 + [True]
    assert (sigs[:6] == mm.EMPTY).all()
    assert _candidates(np.concatenate([sigs, sigs[2:3]])) == set()  # not even two identical emoji texts
    # Without `lowercase`, symbols are units: emoji texts are compared like any other text.
    plain = _sigs(["😀😀😀", "😀😀😀", "🎉🎉"], lowercase=False)
    assert mm.has_shingles(plain).all() and _candidates(plain) == {(0, 1)}


def test_nfc_and_nfd_spellings_have_the_same_signature() -> None:
    nfc, nfd = unicodedata.normalize("NFC", FR), unicodedata.normalize("NFD", FR)
    for lowercase in (True, False):
        sigs = _sigs([nfc, nfd], lowercase=lowercase)
        assert np.array_equal(sigs[0], sigs[1]), lowercase
    fullwidth = _sigs(["Ｋｕｂｅｒｎｅｔｅｓ ｃｌｕｓｔｅｒ ｃｏｎｔｅｘｔ ｉｓ ｓｅｔ ｈｅｒｅ", "kubernetes cluster context is set here"])
    assert np.array_equal(fullwidth[0], fullwidth[1])  # NFKC with `lowercase`


NO_SPACE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
    "\u3031-\u303c\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]"
)
HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af]")


def _is_separator(ch: str) -> bool:
    return ch in "\t\n\x0b\x0c\r " or unicodedata.category(ch)[0] in "ZPS"


def reference_units(text: str, tokenizer: str = "auto") -> list[str]:
    """The documented units, the slow obvious way (text already NFKC and lowercase)."""
    words = "".join(" " if _is_separator(c) else c for c in text).split()
    if tokenizer == "words":
        return words
    if tokenizer == "chars":
        return [c for w in words for c in w]
    hangul_runs = re.findall(f"(?:{HANGUL.pattern})+", " ".join(words))
    spaceless = bool(hangul_runs) and sum(map(len, hangul_runs)) > mm.KOREAN_SPACELESS_RUN * len(hangul_runs)
    own = re.compile(NO_SPACE.pattern + ("|" + HANGUL.pattern if spaceless else ""))
    return [u for w in words for u in re.split(f"({own.pattern})", w) if u]


def _units(text: str, tokenizer: str = "auto") -> list[str]:
    values, offsets = mm.utf8_buffer(mm.normalize_for_shingles(pa.array([text]), True))
    starts, ends, _ = mm.word_spans(values, offsets, mm.unit_starts(values, offsets, tokenizer))
    raw = values.tobytes()
    return [raw[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _shingles(units: list[str], n: int = 5) -> set[tuple[str, ...]]:
    return {tuple(units[i : i + n]) for i in range(max(len(units) - n + 1, 1))}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(reference_units(unicodedata.normalize("NFKC", a).lower())), _shingles(
        reference_units(unicodedata.normalize("NFKC", b).lower())
    )
    return len(sa & sb) / len(sa | sb)


def test_units_follow_the_documented_segmentation() -> None:
    assert _units("Hello, world: 中文字 and カタカナ!") == ["hello", "world", "中", "文", "字", "and", "カ", "タ", "カ", "ナ"]
    assert _units("ภาษาไทย ok") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย", "ok"]
    assert _units("two words", "chars") == list("twowords")
    spaced, unspaced = " ".join(KO), "".join(k.replace(" ", "") for k in KO)
    assert _units(spaced) == _units(spaced, "words")  # Korean with spaces: words
    assert "삭" in _units(unspaced)  # without spaces: syllables
    rng = random.Random(3)
    pieces = [ZH[i : i + 9] for i in range(0, len(ZH), 9)] + [JA[i : i + 7] for i in range(0, len(JA), 7)]
    pieces += KO + FR.split() + ["😀", "—", "ｱｲｳ", "..."]
    for _ in range(200):
        text = rng.choice(["", " ", "\n"]).join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        normal = unicodedata.normalize("NFKC", text).lower()
        for tokenizer in mm.TOKENIZERS:
            assert _units(text, tokenizer) == reference_units(normal, tokenizer), (text, tokenizer)


def _edit(text: str, positions: list[int], rng: random.Random) -> str:
    chars = list(text)
    for p in positions:
        chars[p] = rng.choice("天地玄黄宇宙洪荒日月盈昃辰宿列张")
    return "".join(chars)


@pytest.mark.parametrize("name", ["zh", "ja", "ko"])
def test_cjk_near_duplicates_are_found_at_their_character_jaccard(name: str) -> None:
    base = {"zh": ZH, "ja": JA, "ko": "".join(k.replace(" ", "") for k in KO) * 2}[name]
    rng = random.Random(7)
    # Planted edits: one character (Jaccard ~0.97), a few, many (far below the 0.72 threshold).
    cjk_positions = [i for i, c in enumerate(base) if NO_SPACE.match(c) or HANGUL.match(c)]
    variants = [_edit(base, rng.sample(cjk_positions, k), rng) for k in (1, 3, 40)]
    sigs = _sigs([base, *variants])
    truth = [_jaccard(base, v) for v in variants]
    estimate = [(sigs[0] == s).mean() for s in sigs[1:]]
    assert truth[0] > 0.95 and truth[2] < 0.5, truth
    for t, e in zip(truth, estimate, strict=True):
        assert abs(t - e) < 0.1, (truth, estimate)  # 256 permutations: sd <= 0.03
    found = _candidates(sigs)
    assert (0, 1) in found and (0, 2) in found and (0, 3) not in found


def test_space_separated_text_keeps_fineweb_word_shingles() -> None:
    texts = sample_texts()[:800] + [FR, " ".join(KO), "Ünïcödé wörds: café, naïve; façade!"]
    assert np.array_equal(_sigs(texts, num_perm=64), _sigs(texts, num_perm=64, tokenizer="words"))


def test_tokenizer_is_a_documented_parameter() -> None:
    assert MinHashParams().tokenizer == "auto"
    assert MinHashParams.model_validate({"tokenizer": "chars"}).tokenizer == "chars"
    with pytest.raises(ValueError, match="unknown tokenizer"):
        _sigs(["x"], tokenizer="bytes")
