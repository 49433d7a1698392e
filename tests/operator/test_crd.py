"""The CurationJob CRD: generated from the spec models, committed, and kept in sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from curation.crd import DEFAULT_PATH, build_crd, main, to_yaml
from curation.spec import StageType

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / DEFAULT_PATH


def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def stage_schema() -> dict[str, Any]:
    return schema()["properties"]["spec"]["properties"]["stages"]["items"]


def test_committed_crd_matches_the_spec_models():
    assert COMMITTED.read_text(encoding="utf-8") == to_yaml(build_crd()), (
        f"{DEFAULT_PATH} is out of date: run `python -m curation.crd --write` (or `thresher crd`) and commit it"
    )


def test_check_mode_reports_drift(tmp_path, capsys):
    stale = tmp_path / "crd.yaml"
    stale.write_text("old", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--write", str(stale)]) == 0 and main(["--check", str(stale)]) == 0


def test_names_scope_and_short_names():
    spec = build_crd()["spec"]
    assert (spec["group"], spec["scope"]) == ("thresher.dev", "Namespaced")
    assert spec["names"]["kind"] == "CurationJob" and spec["names"]["plural"] == "curationjobs"
    assert "cj" not in spec["names"]["shortNames"]  # CronJob's
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Stage",
        "Progress",
        "Kept %",
        "Age",
    ]


def test_field_descriptions_come_from_the_pydantic_docstrings():
    params = stage_schema()["properties"]["params"]["properties"]
    assert params["bands"]["description"].startswith("[minhash-dedup] Number of LSH bands.")
    assert "Default: `14`" in params["bands"]["description"]
    spec = schema()["properties"]["spec"]["properties"]
    assert "PersistentVolumeClaim" in spec["input"]["properties"]["pvc"]["description"]


def test_enums_and_ranges_reach_the_schema():
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["parallelism"]["minimum"] == 1
    assert spec["input"]["properties"]["format"]["enum"] == ["parquet", "jsonl"]
    assert stage_schema()["properties"]["type"]["enum"] == [t.value for t in StageType]
    params = stage_schema()["properties"]["params"]["properties"]
    assert params["rowsPerBand"]["maximum"] == 64
    # keepFraction is shared by two stage types with different rules: loosened, then checked by CEL
    assert "minimum" not in params["keepFraction"]
    rules = [r["rule"] for r in stage_schema()["x-kubernetes-validations"]]
    assert any("'quality-score'" in r and "self.params.keepFraction > 0.0" in r for r in rules)


def test_each_stage_type_refuses_the_params_of_other_types():
    rules = [r["rule"] for r in stage_schema()["x-kubernetes-validations"]]
    exact = next(
        r for r in rules if r.startswith("self.type != 'exact-dedup'") and "has(self.params.bands)" in r
    )
    assert "has(self.params.normalize)" not in exact
    for stage_type in StageType:
        assert any(r.startswith(f"self.type != '{stage_type.value}'") for r in rules)


def test_shared_param_names_keep_each_types_own_enum():
    rules = {r["rule"]: r["message"] for r in stage_schema()["x-kubernetes-validations"]}
    keep_rule = next(r for r in rules if r.startswith("self.type != 'exact-dedup'") and "params.keep in" in r)
    assert '["first", "longest"]' in keep_rule


def test_stage_names_are_unique_and_spec_is_immutable_except_suspend():
    stages = schema()["properties"]["spec"]["properties"]["stages"]
    assert "exists_one" in stages["x-kubernetes-validations"][0]["rule"]
    root_rule = schema()["x-kubernetes-validations"][0]["rule"]
    assert "self.spec.stages == oldSelf.spec.stages" in root_rule
    assert "self.spec.suspend" not in root_rule
    assert "InvalidSpec" in root_rule


def _unknown_keys(doc: Any, node: dict[str, Any], path: str) -> list[str]:
    """Keys of `doc` the structural schema would prune (i.e. the CRD and the models disagree)."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(doc, dict):
        props = node.get("properties")
        if props is None:
            extra = node.get("additionalProperties", {})
            return [m for k, v in doc.items() for m in _unknown_keys(v, extra, f"{path}.{k}")]
        out = [f"{path}.{k}" for k in doc if k not in props]
        return out + [
            m for k, v in doc.items() if k in props for m in _unknown_keys(v, props[k], f"{path}.{k}")
        ]
    if isinstance(doc, list):
        return [m for i, v in enumerate(doc) for m in _unknown_keys(v, node.get("items", {}), f"{path}[{i}]")]
    return []


def test_every_field_of_a_fully_dumped_spec_is_in_the_schema():
    from curation.spec import parse_spec

    required = {StageType.DECONTAMINATE: {"params": {"benchmarks": [{"name": "b", "path": "b.jsonl"}]}}}
    stages = [{"type": t.value, "name": f"s{i}", **required.get(t, {})} for i, t in enumerate(StageType)]
    spec = parse_spec({"input": {"path": "a"}, "output": {"path": "b"}, "stages": stages})
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert _unknown_keys(doc, schema()["properties"]["spec"], "spec") == []


def test_the_quickstart_example_fits_the_schema_and_the_sample_is_a_copy():
    example = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text(encoding="utf-8"))
    assert _unknown_keys(example["spec"], schema()["properties"]["spec"], "spec") == []
    sample = yaml.safe_load((ROOT / "manifests" / "samples" / "quickstart.yaml").read_text(encoding="utf-8"))
    assert sample["spec"] == example["spec"]


def test_the_production_example_fits_the_schema():
    example = yaml.safe_load((ROOT / "examples" / "production.yaml").read_text(encoding="utf-8"))
    assert _unknown_keys(example["spec"], schema()["properties"]["spec"], "spec") == []


def test_gpus_on_a_cpu_only_stage_type_are_refused_by_the_schema_and_the_planner():
    from curation.errors import SpecError
    from curation.plan import plan_steps, stage_uses_gpu
    from curation.spec import parse_spec

    rule = next(r for r in stage_schema()["x-kubernetes-validations"] if "resources.gpus" in r["rule"])
    gpu_types = [t.value for t in StageType if stage_uses_gpu(t)]
    assert gpu_types and "exact-dedup" not in gpu_types and "semantic-dedup" in gpu_types
    assert rule["rule"].endswith(f"self.type in {json.dumps(gpu_types)}")
    assert "'resources.gpus: stage type ' + self.type + ' runs on CPU only" in rule["messageExpression"]
    doc = {"input": {"path": "a"}, "output": {"path": "b"}}
    with pytest.raises(
        SpecError, match=r"spec.stages\[1\].resources.gpus: stage type exact-dedup runs on CPU"
    ):
        plan_steps(
            parse_spec(
                {
                    **doc,
                    "stages": [
                        {"type": "heuristic-filter"},
                        {"type": "exact-dedup", "resources": {"gpus": 8}},
                    ],
                }
            )
        )
    plan_steps(parse_spec({**doc, "stages": [{"type": "semantic-dedup", "resources": {"gpus": 8}}]}))
    plan_steps(parse_spec({**doc, "stages": [{"type": "exact-dedup", "resources": {"cpu": "4"}}]}))


def test_engine_resources_and_the_new_cluster_fields_are_in_the_schema():
    spec = schema()["properties"]["spec"]
    props = spec["properties"]
    assert props["engineResources"]["properties"]["memory"]["pattern"]
    assert "2Gi" in props["engineResources"]["description"]
    assert props["concurrency"]["minimum"] == 1 and "parallelism" in props["concurrency"]["description"]
    assert "wait for as long as it takes" in props["unschedulableTimeoutSeconds"]["description"]
    rules = {r["rule"]: r["message"] for r in spec["x-kubernetes-validations"]}
    assert rules[
        "!has(self.engineResources) || !has(self.engineResources.gpus) || self.engineResources.gpus == 0"
    ] == ("engineResources.gpus: ingest and finalize run on CPU only; remove `gpus`")
