"""Parameters of the heuristic quality filter: Gopher quality, Gopher repetition, C4 and FineWeb rules.

Every threshold is a typed field whose default is the value published with the rule. A `min_*`
field rejects a document whose measure is strictly below it, a `max_*` field one whose measure is
strictly above it, so a document exactly at a threshold is kept.

Shared definitions (what the rules measure):
- *words*: whitespace-separated tokens;
- *lines*: the text split on newlines, stripped of surrounding whitespace, empty lines dropped;
- *paragraphs*: the text split on blank lines, stripped, empty ones dropped.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from curation.params.base import CamelModel, StageDef, StepDef
from curation.params.base import StepKind as _Kind

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQualityRules(CamelModel):
    """Gopher quality rules (Rae et al. 2021, "Scaling Language Models", appendix A.1.1)."""

    enabled: bool = True
    """Apply this rule family."""

    min_words: int = Field(default=50, ge=0)
    """Fewest words (tokens holding at least one letter, digit or other non-symbol character)."""

    max_words: int = Field(default=100_000, ge=1)
    """Most words (same count as `minWords`)."""

    min_mean_word_length: float = Field(default=3.0, ge=0)
    """Smallest mean word length in characters (symbol-only tokens excluded)."""

    max_mean_word_length: float = Field(default=10.0, ge=0)
    """Largest mean word length in characters."""

    max_hash_word_ratio: float = Field(default=0.1, ge=0)
    """Most occurrences of `#` per word."""

    max_ellipsis_word_ratio: float = Field(default=0.1, ge=0)
    """Most ellipses (`...` or `…`) per word."""

    max_bullet_line_frac: float = Field(default=0.9, ge=0, le=1)
    """Largest fraction of lines starting with a bullet (`•`, `-`, `*`, `‣`, `◦`, `⁃`, `●`, `▪`, `–`)."""

    max_ellipsis_line_frac: float = Field(default=0.3, ge=0, le=1)
    """Largest fraction of lines ending with an ellipsis."""

    min_alpha_word_frac: float = Field(default=0.8, ge=0, le=1)
    """Smallest fraction of words holding at least one alphabetic character."""

    min_stop_words: int = Field(default=2, ge=0)
    """Fewest occurrences of the stop words (words lowercased, surrounding punctuation trimmed)."""

    stop_words: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=lambda: list(GOPHER_STOP_WORDS), max_length=1000
    )
    """The stop words counted by `minStopWords` (Gopher: the, be, to, of, and, that, have, with)."""


def _check_ngram_sizes(value: dict[int, float]) -> dict[int, float]:
    for n, frac in value.items():
        if not 1 <= n <= 32:
            raise ValueError(f"n-gram size {n} is outside 1..32")
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"fraction {frac} for n={n} is outside 0..1")
    return dict(sorted(value.items()))


class GopherRepetitionRules(CamelModel):
    """Gopher repetition rules (Rae et al. 2021, appendix A.1.1, table A1).

    Character fractions of lines and paragraphs count the characters of every occurrence after the
    first, over the characters of all lines (paragraphs). N-gram fractions count word characters
    (whitespace excluded) over all word characters of the document."""

    enabled: bool = True
    """Apply this rule family."""

    max_dup_line_frac: float = Field(default=0.30, ge=0, le=1)
    """Largest fraction of lines that repeat an earlier line of the document."""

    max_dup_para_frac: float = Field(default=0.30, ge=0, le=1)
    """Largest fraction of paragraphs that repeat an earlier paragraph."""

    max_dup_line_char_frac: float = Field(default=0.20, ge=0, le=1)
    """Largest fraction of line characters inside repeated lines."""

    max_dup_para_char_frac: float = Field(default=0.20, ge=0, le=1)
    """Largest fraction of paragraph characters inside repeated paragraphs."""

    max_top_ngram_char_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """Per n-gram size n: largest fraction of word characters covered by the most frequent n-gram
    (all its occurrences; only n-grams that occur at least twice count; ties: the longer one)."""

    max_dup_ngram_char_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    """Per n-gram size n: largest fraction of word characters inside repeated n-grams (every
    occurrence after the first; a word covered by several overlapping repeats counts once)."""

    @field_validator("max_top_ngram_char_frac", "max_dup_ngram_char_frac")
    @classmethod
    def _check_ngrams(cls, value: dict[int, float]) -> dict[int, float]:
        return _check_ngram_sizes(value)


class C4Rules(CamelModel):
    """C4 rules (Raffel et al. 2020, section 2.2), read as a document filter.

    The paper's page-level rules reject documents: `lorem ipsum`, a curly bracket, a word from a
    bad-words list, too few sentences. Its line-level rules (keep only lines that end in terminal
    punctuation, have enough words, do not mention javascript or a cookie/terms policy) rewrite
    text rather than select documents, so they are off by default (`lineRemoval: off`); FineWeb
    also found the terminal-punctuation rule removes too much good text. Counts are the paper's and
    those of the code that built C4 (TensorFlow Datasets `c4_utils`): at least 3 sentences and 5
    words per line (DataTrove's C4 filter defaults to the reverse, 5 sentences and 3 words)."""

    enabled: bool = True
    """Apply this rule family."""

    filter_lorem_ipsum: bool = True
    """Reject documents containing "lorem ipsum" (any case)."""

    filter_curly_bracket: bool = True
    """Reject documents containing `{` (code and templates)."""

    min_sentences: int = Field(default=3, ge=0)
    """Fewest sentences (runs of `.`, `!` or `?` followed by whitespace or the end). Counted on the
    cleaned text when line removal is on."""

    bad_words: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=2000
    )
    """Reject documents containing any of these words (lowercased, punctuation-trimmed tokens).
    C4 used the "List of Dirty, Naughty, Obscene or Otherwise Bad Words"; none is shipped: supply
    your own list."""

    line_removal: Literal["off", "annotate", "replace"] = "off"
    """Line-level rules. `off`: none. `annotate`: judge the cleaned text and add columns `c4_text`
    (the cleaned text) and `c4_lines_removed`; `text` is unchanged. `replace`: `text` becomes the
    cleaned text and `c4_lines_removed` records how many lines were dropped. A document left with
    no line is rejected as `c4:no-lines-left`."""

    min_words_per_line: int = Field(default=5, ge=0)
    """Line removal: drop lines with fewer words."""

    max_word_length: int = Field(default=1000, ge=1)
    """Line removal: drop lines holding a longer word."""

    require_terminal_punct: bool = True
    """Line removal: drop lines not ending in `.`, `!`, `?` or a closing double quote (and lines
    ending in an ellipsis)."""

    drop_javascript_lines: bool = True
    """Line removal: drop lines mentioning "javascript"."""

    drop_policy_lines: bool = True
    """Line removal: drop lines mentioning terms of use, privacy or cookie policies."""


class FineWebRules(CamelModel):
    """FineWeb rules (Penedo et al. 2024, "The FineWeb Datasets", section 3.3 and DataTrove's
    FineWebQualityFilter)."""

    enabled: bool = True
    """Apply this rule family."""

    min_line_punct_frac: float = Field(default=0.12, ge=0, le=1)
    """Smallest fraction of lines ending with terminal punctuation."""

    max_dup_line_char_frac: float = Field(default=0.10, ge=0, le=1)
    """Largest fraction of line characters inside repeated lines (the paper's 0.1; DataTrove's
    code default is 0.01)."""

    short_line_length: int = Field(default=30, ge=1)
    """A line with fewer characters than this is short."""

    max_short_line_frac: float = Field(default=0.67, ge=0, le=1)
    """Largest fraction of short lines."""

    max_newline_word_ratio: float = Field(default=0.3, ge=0)
    """Largest number of newlines per word (list-like documents)."""


class HeuristicFilterParams(CamelModel):
    """Rule-based quality filter. Families run in the order gopherQuality, gopherRepetition, c4,
    fineweb, and rules inside a family in their documented order; a rejected document carries the
    first failing rule as reason, `<family>:<rule>` (e.g. `gopher-quality:min-words`)."""

    gopher_quality: GopherQualityRules = GopherQualityRules()
    """Gopher quality rules."""

    gopher_repetition: GopherRepetitionRules = GopherRepetitionRules()
    """Gopher repetition rules."""

    c4: C4Rules = C4Rules()
    """C4 rules."""

    fineweb: FineWebRules = FineWebRules()
    """FineWeb rules."""


# ---- the stage declaration (curation/registry.py) ------------------------------------------------

MAP, REDUCE, GLOBAL = _Kind.MAP, _Kind.REDUCE, _Kind.GLOBAL
STAGE = StageDef(
    type="heuristic-filter",
    order=3,
    params=HeuristicFilterParams,
    title="heuristic quality filters (Gopher, C4, FineWeb rules)",
    steps=(StepDef("filter", MAP),),
    impl="curation.stages.heuristic:HeuristicFilterStage",
    produces=(),
)
