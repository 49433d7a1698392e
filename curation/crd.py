"""The CurationJob CustomResourceDefinition, generated from the pipeline spec models.

`build_crd()` turns ``PipelineSpec``'s JSON schema into a structural OpenAPI v3 schema: field
descriptions (from the pydantic attribute docstrings) for ``kubectl explain``, enums, ranges,
patterns and CEL rules, so that ``kubectl apply`` refuses nonsense before the operator sees it.

Stage ``params`` are a union discriminated by the stage ``type``. A structural schema cannot say
"the shape of ``params`` depends on ``type``", so ``params`` is the *union of the properties* of every
stage type's parameters (each description says which types use the field) plus, per stage type, CEL
rules that refuse fields of other types and check enums/ranges where two types share a field name
with different rules. We prefer this to ``x-kubernetes-preserve-unknown-fields`` on ``params``
because it keeps ``kubectl explain curationjob.spec.stages.params`` useful, keeps the API server's
type/enum/range checks and its pruning of unknown fields. The operator still parses every spec with
pydantic (the final authority) and reports what CEL cannot express as a ``Failed`` condition.

Pure: imports pydantic models only (no Kubernetes client).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from curation.crd_status import ConditionType, CurationJobStatus, Phase
from curation.plan import stage_uses_gpu
from curation.spec import API_GROUP, API_VERSION, KIND, STAGE_NAME_RE, PipelineSpec, StageType

PLURAL = "curationjobs"
SINGULAR = "curationjob"
SHORT_NAMES = ["curjob", "cjob"]  # not `cj`: CronJob owns it
CATEGORIES = ["thresher"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
PHASES = [p.value for p in Phase]
CONDITION_TYPES = [c.value for c in ConditionType]
# CEL cost estimation multiplies by the declared maximum sizes: unbounded strings make every
# comparison "too expensive" for the API server, so every string gets a generous bound.
STRING_MAX_LENGTH = 4096
MAP_MAX_PROPERTIES = 64
LIST_MAX_ITEMS = 64
RESERVED_STAGE_NAMES = ("ingest", "finalize")  # mirrors curation.plan.RESERVED_STAGE_NAMES
ENGINE_GPUS_MESSAGE = "engineResources.gpus: ingest and finalize run on CPU only; remove `gpus`"
# Spec fields that may change while a job runs (everything else is immutable).
MUTABLE_WHILE_RUNNING = ("suspend",)

_DROP_KEYS = {"title", "default", "additionalProperties", "discriminator", "$ref", "anyOf", "oneOf", "const"}


class _SchemaConverter:
    """pydantic JSON schema (draft 2020-12, with $defs) -> Kubernetes structural schema."""

    def __init__(self, defs: dict[str, Any], bounded: bool = True, nullable: bool = True) -> None:
        self.defs = defs
        self.bounded = bounded  # give every list, map and string a maximum size (for CEL costs)
        self.nullable = nullable  # mark `X | None` fields nullable (users may write `null`)

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = copy.deepcopy(self.defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **extra}
        return node

    def _unwrap_optional(self, node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """`X | None` -> (X, nullable); the field's own keys (its docstring) win over X's."""
        if "anyOf" not in node:
            return node, False
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
        own = {k: v for k, v in node.items() if k != "anyOf"}
        return {**self.resolve(options[0]), **own}, len(options) < len(node["anyOf"])

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        node, nullable = self._unwrap_optional(self.resolve(node))
        if "oneOf" in node:
            raise ValueError("unions other than the stage list are not supported by the CRD generator")
        out: dict[str, Any] = {}
        if "description" in node:
            out["description"] = _clean(node["description"])
        _append_default(out, node)
        if "const" in node:
            out["type"] = "string"
            out["enum"] = [node["const"]]
        elif "type" in node:
            out["type"] = node["type"]
        for key, value in node.items():
            if key in _DROP_KEYS or key in ("description", "type", "properties", "items", "required"):
                continue
            if key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            else:
                out[key] = value
        kind = out.get("type")
        if kind == "object":
            self._convert_object(node, out)
        elif kind == "array":
            out["items"] = self.convert(node.get("items", {}))
            if self.bounded:
                out.setdefault("maxItems", LIST_MAX_ITEMS)
        elif kind == "string" and "enum" not in out and self.bounded:
            out.setdefault("maxLength", STRING_MAX_LENGTH)
        if nullable and self.nullable:
            out["nullable"] = True
        return out

    def _convert_object(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        if "properties" in node:
            out["properties"] = {k: self.convert(v) for k, v in node["properties"].items()}
            if node.get("required"):
                out["required"] = list(node["required"])
            return
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = self.convert(extra)
            if self.bounded:
                out["maxProperties"] = MAP_MAX_PROPERTIES
        else:  # dict[str, Any]: an object passed through unchanged (e.g. a core/v1 Affinity)
            out["x-kubernetes-preserve-unknown-fields"] = True


def _clean(text: str) -> str:
    return " ".join(text.split())


def _append_default(out: dict[str, Any], node: dict[str, Any]) -> None:
    """Defaults stay in pydantic (not API-server defaulting, which would rewrite stored objects),
    but `kubectl explain` should still show them."""
    default = node.get("default")
    if default is None or isinstance(default, dict) or default in ([], ""):
        return
    shown = json.dumps(default) if not isinstance(default, str) else default
    sentence = f"Default: `{shown}`."
    out["description"] = f"{out['description']} {sentence}" if out.get("description") else sentence


# --------------------------------------------------------------------------- stages union


def _scalar_checks(field: str, schema: dict[str, Any]) -> list[str]:
    """CEL checks that restore a type's own enum/range on a field shared with a different rule."""
    ref = f"self.params.{field}"
    checks = []
    if "enum" in schema:
        checks.append(f"{ref} in {json.dumps(schema['enum'])}")
    if "minimum" in schema:
        op = ">" if schema.get("exclusiveMinimum") else ">="
        checks.append(f"{ref} {op} {schema['minimum']}")
    if "maximum" in schema:
        op = "<" if schema.get("exclusiveMaximum") else "<="
        checks.append(f"{ref} {op} {schema['maximum']}")
    return checks


def _loosest(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """A schema every variant of a shared field satisfies (per-type CEL rules restore the rest)."""
    types = {s.get("type") for s in schemas}
    if len(types) != 1 or types == {"object"} or types == {"array"}:
        return {"x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {"type": types.pop()}
    if out["type"] == "string":
        out["maxLength"] = max(s.get("maxLength", STRING_MAX_LENGTH) for s in schemas)
        if all("enum" in s for s in schemas):
            out["enum"] = sorted({v for s in schemas for v in s["enum"]})
    if any(s.get("nullable") for s in schemas):
        out["nullable"] = True
    return out


def _without_description(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "description"}


def _merge_params(variants: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Union of every stage type's params properties, and the per-type CEL rules that keep it exact."""
    by_field: dict[str, dict[str, dict[str, Any]]] = {}
    for stage_type, schema in variants.items():
        for field, prop in schema.get("properties", {}).items():
            by_field.setdefault(field, {})[stage_type] = prop
    properties: dict[str, Any] = {}
    rules: list[dict[str, str]] = []
    for field in sorted(by_field):
        owners = by_field[field]
        shapes = [_without_description(p) for p in owners.values()]
        identical = all(s == shapes[0] for s in shapes)
        merged = copy.deepcopy(shapes[0]) if identical else _loosest(shapes)
        if not identical:
            for stage_type, prop in owners.items():
                checks = _scalar_checks(field, prop)
                if checks:
                    rules.append(
                        {
                            "rule": f"self.type != '{stage_type}' || !has(self.params) || "
                            f"!has(self.params.{field}) || ({' && '.join(checks)})",
                            "message": f"{stage_type}: params.{field} must satisfy "
                            f"{' and '.join(c.replace(f'self.params.{field} ', '') for c in checks)}",
                        }
                    )
        descriptions = {t: p.get("description", "") for t, p in owners.items()}
        if len(set(descriptions.values())) == 1:
            text = f"[{', '.join(owners)}] {next(iter(descriptions.values()))}".strip()
        else:
            text = " | ".join(f"[{t}] {d}".strip() for t, d in descriptions.items())
        merged["description"] = text
        properties[field] = merged
    for stage_type, schema in variants.items():
        foreign = sorted(set(properties) - set(schema.get("properties", {})))
        if foreign:
            allowed = ", ".join(sorted(schema.get("properties", {}))) or "nothing"
            rules.append(
                {
                    "rule": f"self.type != '{stage_type}' || !has(self.params) || "
                    f"!({' || '.join(f'has(self.params.{f})' for f in foreign)})",
                    "message": f"params of stage type {stage_type} accept only: {allowed}",
                }
            )
    params = {
        "type": "object",
        "description": "Parameters of the stage. Which fields apply depends on `type`: each field's "
        "description names its stage types in brackets.",
        "properties": properties,
    }
    return params, rules


def _stage_item_schema(converter: _SchemaConverter, union: dict[str, Any]) -> dict[str, Any]:
    tags = {ref: tag for tag, ref in union["discriminator"]["mapping"].items()}
    variants = {tags[o["$ref"]]: converter.convert(o) for o in union["oneOf"]}  # in declaration order
    first = next(iter(variants.values()))
    params, rules = _merge_params({tag: v["properties"]["params"] for tag, v in variants.items()})
    properties = {k: v for k, v in first["properties"].items() if k not in ("type", "params")}
    properties["type"] = {
        "type": "string",
        "enum": list(variants),
        "description": "Stage type; decides which `params` apply.",
    }
    properties["params"] = params
    name = properties["name"]
    name["pattern"] = STAGE_NAME_RE.pattern
    name["maxLength"] = 20
    name["x-kubernetes-validations"] = [
        {
            "rule": f"!(self in {json.dumps(list(RESERVED_STAGE_NAMES))})",
            "message": f"stage names {' and '.join(RESERVED_STAGE_NAMES)} are reserved; choose another name",
        }
    ]
    return {
        "type": "object",
        "description": "One stage: `type` selects the algorithm, `params` its typed parameters.",
        "required": ["type"],
        "properties": properties,
        "x-kubernetes-validations": [*rules, _cpu_only_gpus_rule()],
    }


def _cpu_only_gpus_rule() -> dict[str, str]:
    """`resources.gpus` on a stage type whose steps never use GPUs is a mistake, not a no-op
    (mirrors curation.plan.check_stage_gpus)."""
    gpu_types = [t.value for t in StageType if stage_uses_gpu(t)]
    listed = ", ".join(gpu_types)
    return {
        "rule": "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus == 0 || "
        f"self.type in {json.dumps(gpu_types)}",
        "message": f"resources.gpus: this stage type runs on CPU only; remove `gpus` (GPU stage types: {listed})",
        "messageExpression": f"'resources.gpus: stage type ' + self.type + ' runs on CPU only; remove "
        f"`gpus` (GPU stage types: {listed})'",
    }


def _stage_name_expr(var: str) -> str:
    return f"(has({var}.name) ? {var}.name : {var}.type)"


def spec_schema() -> dict[str, Any]:
    """Structural schema of a CurationJob's `spec` (= a pipeline spec)."""
    raw = PipelineSpec.model_json_schema(by_alias=True, mode="validation")
    converter = _SchemaConverter(raw.pop("$defs", {}))
    stages_union = raw["properties"]["stages"].pop("items")
    schema = converter.convert(raw)
    stages = schema["properties"]["stages"]
    stages["items"] = _stage_item_schema(converter, stages_union)
    stages["x-kubernetes-validations"] = [
        {
            "rule": f"self.all(s, self.exists_one(t, {_stage_name_expr('t')} == {_stage_name_expr('s')}))",
            "message": "stage names must be unique (give repeated stage types distinct `name`s)",
        }
    ]
    pvc = "(has(self.{0}.pvc) ? self.{0}.pvc : '')"
    schema["x-kubernetes-validations"] = [
        {
            "rule": f"self.input.path != self.output.path || {pvc.format('input')} != {pvc.format('output')}",
            "message": "output.path must differ from input.path (the input is never modified)",
        },
        {
            "rule": "!has(self.engineResources) || !has(self.engineResources.gpus) || "
            "self.engineResources.gpus == 0",
            "message": ENGINE_GPUS_MESSAGE,
        },
    ]
    schema["properties"]["output"]["properties"]["tokenize"]["x-kubernetes-validations"] = [
        {"rule": "!has(self.eosToken) || !has(self.eosId)", "message": "give eosToken or eosId, not both"},
        {"rule": "!has(self.formats) || self.formats.all(f, self.formats.exists_one(g, g == f))",
         "message": "formats: each format at most once"},
    ]
    return schema


# --------------------------------------------------------------------------- status


def status_schema() -> dict[str, Any]:
    """Structural schema of a CurationJob's `status`, from the model the operator writes.

    No default bounds here (the API server would refuse a whole status patch with one more reason
    or step than a bound allows); the bounds the CEL rules need (conditions) are in the model."""
    raw = CurationJobStatus.model_json_schema(by_alias=True, mode="validation")
    converter = _SchemaConverter(raw.pop("$defs", {}), bounded=False, nullable=False)
    return converter.convert(raw)


# --------------------------------------------------------------------------- CRD


def _immutability_rule(spec_fields: list[str]) -> dict[str, str]:
    """Spec is frozen once the operator started the job, except `suspend`. A job rejected for an
    invalid spec (reason InvalidSpec, nothing ran) may be fixed in place."""
    same = " && ".join(
        f"has(self.spec.{f}) == has(oldSelf.spec.{f}) && (!has(self.spec.{f}) || self.spec.{f} == oldSelf.spec.{f})"
        for f in spec_fields
        if f not in MUTABLE_WHILE_RUNNING
    )
    not_started = "!has(oldSelf.status) || !has(oldSelf.status.phase)"
    fixable = (
        "(has(oldSelf.status.conditions) && oldSelf.status.conditions.exists(c, c.type == 'Failed' && "
        "c.status == 'True' && c.reason == 'InvalidSpec'))"
    )
    return {
        "rule": f"{not_started} || {fixable} || ({same})",
        "message": "spec is immutable once the job has started, except `suspend`; "
        "create a new CurationJob to run a different pipeline",
    }


def build_crd() -> dict[str, Any]:
    spec = spec_schema()
    spec["description"] = (
        "The pipeline: the same document `thresher run` takes locally. " + spec.get("description", "")
    ).strip()
    root = {
        "type": "object",
        "description": "A data-curation pipeline run in the cluster: one Indexed Job per step.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"`{API_GROUP}/{API_VERSION}`."},
            "kind": {"type": "string", "description": f"`{KIND}`."},
            "metadata": {"type": "object"},  # the API server refuses more; it documents ObjectMeta itself
            "spec": spec,
            "status": status_schema(),
        },
        "x-kubernetes-validations": [_immutability_rule(list(spec["properties"]))],
    }
    columns = [
        ("Phase", "string", ".status.phase", "Summary of the job's state."),
        ("Stage", "string", ".status.currentStage", "Stage that runs now (or ran last)."),
        ("Progress", "string", ".status.progress", "Finished steps / all steps."),
        ("Kept %", "number", ".status.keptPercent", "Documents kept, in percent of the input."),
        ("Age", "date", ".metadata.creationTimestamp", ""),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "thresher"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, **({"description": d} if d else {})}
                        for n, t, p, d in columns
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def to_yaml(crd: dict[str, Any]) -> str:
    header = "# Generated by `thresher crd` from curation/spec.py; do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=110, allow_unicode=True)


DEFAULT_PATH = Path("manifests/crd/thresher.dev_curationjobs.yaml")


def main(argv: list[str] | None = None) -> int:
    """`python -m curation.crd [--write PATH | --check PATH]`; prints the CRD YAML by default."""
    parser = argparse.ArgumentParser(prog="thresher crd", description=main.__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, nargs="?", const=DEFAULT_PATH, help="write the YAML here")
    group.add_argument("--check", type=Path, nargs="?", const=DEFAULT_PATH, help="fail if PATH differs")
    args = parser.parse_args(argv)
    text = to_yaml(build_crd())
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    elif args.check:
        if not args.check.exists() or args.check.read_text(encoding="utf-8") != text:
            print(f"{args.check} is out of date; run `thresher crd --write {args.check}`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
