"""Preflight's column checks: what a curriculum signal may name at each point of the pipeline."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from curation import registry
from curation.errors import SpecError
from curation.preflight import canonical_schema, check_stage_columns
from curation.spec import parse_spec

INPUT = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("year", pa.int64())])


def check(*stages: dict[str, object]) -> None:
    spec = parse_spec({"input": {"path": "in", "idField": "doc_id"}, "output": {"path": "out"},
                       "stages": list(stages)})
    check_stage_columns(spec, canonical_schema(spec, INPUT))


def curriculum(signal: str) -> dict[str, object]:
    return {"type": "curriculum", "params": {"signal": signal}}


def test_input_columns_builtins_and_earlier_annotations_are_accepted() -> None:
    check(curriculum("year"))
    check(curriculum("compression_ratio"))
    check({"type": "heuristic-filter", "params": {"c4": {"lineRemoval": "annotate"}}}, curriculum("c4_lines_removed"))


def test_a_column_made_only_by_a_later_stage_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec.stages\[0\].params.signal: no column 'c4_lines_removed'.*"
                                        r"numeric columns: year"):
        check(curriculum("c4_lines_removed"), {"type": "heuristic-filter", "params": {"c4": {"lineRemoval": "replace"}}})


def test_after_a_stage_whose_columns_preflight_does_not_know_the_column_is_left_to_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = registry.stage_def("heuristic-filter")  # as for a stage type that declares no outputs
    monkeypatch.setitem(registry.by_type(), "heuristic-filter", dataclasses.replace(real, produces=None))
    check({"type": "heuristic-filter"}, curriculum("made_by_it"))
    with pytest.raises(SpecError, match="no column 'made_by_it'"):
        check(curriculum("made_by_it"), {"type": "heuristic-filter"})
