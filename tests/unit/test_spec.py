from __future__ import annotations

from pathlib import Path

import pytest

from curation.errors import SpecError
from curation.spec import load_spec, parse_spec

BASE = {"input": {"path": "in"}, "output": {"path": "out"}}


def test_bare_spec_and_curationjob_document_are_the_same_pipeline() -> None:
    bare = parse_spec({**BASE, "stages": [{"type": "minhash-dedup", "params": {"bands": 20}}]})
    job = parse_spec({"apiVersion": "thresher.dev/v1alpha1", "kind": "CurationJob", "metadata": {"name": "x"},
                      "spec": {**BASE, "stages": [{"type": "minhash-dedup", "params": {"bands": 20}}]}})
    assert bare == job
    assert bare.stages[0].params.bands == 20 and bare.stages[0].params.rows_per_band == 8


def test_snake_case_and_camel_case_are_both_accepted() -> None:
    a = parse_spec({**BASE, "stages": [{"type": "minhash-dedup", "params": {"rowsPerBand": 4}}]})
    b = parse_spec({**BASE, "stages": [{"type": "minhash-dedup", "params": {"rows_per_band": 4}}]})
    assert a == b


def test_unknown_stage_type_names_the_field_and_the_choices() -> None:
    with pytest.raises(SpecError, match=r"spec.stages\[0\].*unknown stage type; expected one of: exact-dedup"):
        parse_spec({**BASE, "stages": [{"type": "dedupe"}]})


def test_unknown_parameter_is_refused_with_its_path() -> None:
    with pytest.raises(SpecError, match=r"spec.stages\[0\].params.band: unknown field"):
        parse_spec({**BASE, "stages": [{"type": "minhash-dedup", "params": {"band": 3}}]})


def test_out_of_range_parameter_is_refused() -> None:
    with pytest.raises(SpecError, match=r"stages\[0\].params.bands: Input should be greater than or equal to 1"):
        parse_spec({**BASE, "stages": [{"type": "minhash-dedup", "params": {"bands": 0}}]})


def test_repeated_stage_names_are_refused() -> None:
    with pytest.raises(SpecError, match="repeated: exact-dedup"):
        parse_spec({**BASE, "stages": [{"type": "exact-dedup"}, {"type": "exact-dedup"}]})


def test_output_equal_to_input_is_refused() -> None:
    with pytest.raises(SpecError, match="output.path must differ from input.path"):
        parse_spec({"input": {"path": "data/"}, "output": {"path": "data"}, "stages": [{"type": "exact-dedup"}]})


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(SpecError, match="kind must be CurationJob"):
        parse_spec({"apiVersion": "thresher.dev/v1alpha1", "kind": "Job", "spec": {}})


def test_minhash_threshold_follows_the_s_curve() -> None:
    p = parse_spec({**BASE, "stages": [{"type": "minhash-dedup"}]}).stages[0].params
    assert 0.70 < p.threshold() < 0.75  # (1/14)^(1/8) = 0.719
    assert p.detection_probability(0.9) > 0.99 and p.detection_probability(0.5) < 0.06


def test_duplicate_keys_are_refused_but_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    merged = tmp_path / "merged.yaml"
    merged.write_text("input: {path: in}\noutput: {path: out}\nstages:\n"
                      "  - {type: minhash-dedup, params: &p {bands: 10, rowsPerBand: 5}}\n"
                      "  - {type: minhash-dedup, name: again, params: {<<: *p, bands: 12}}\n")
    second = load_spec(merged).stages[1].params
    assert (second.bands, second.rows_per_band) == (12, 5)
    dup = tmp_path / "dup.yaml"
    dup.write_text("input: {path: in}\noutput: {path: out}\nstages: [{type: exact-dedup}]\noutput: {path: o2}\n")
    with pytest.raises(SpecError, match=r"dup.yaml: line 4: key 'output' appears twice in one mapping \(first on line 2\)"):
        load_spec(dup)
