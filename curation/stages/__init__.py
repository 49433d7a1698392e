"""Stage implementations, loaded by name (the registry's `StageDef.impl`) so that planning never
imports heavy dependencies."""

from __future__ import annotations

import importlib
from typing import Any

from curation.registry import stage_def

ENGINE = {  # the engine's own stages (not stage types a spec can name)
    "ingest": "curation.stages.ingest:IngestStage",
    "finalize": "curation.stages.finalize:FinalizeStage",
    "evaluate": "curation.stages.evaluate:EvaluateStage",
}


def load_stage_class(type_name: str) -> Any:
    """The class with a stage type's step code (`StageDef.impl`, or an engine stage)."""
    target = ENGINE.get(type_name) or stage_def(type_name).impl
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def preflight_stages(spec: Any, schema: Any = None) -> None:
    """Each stage's own checks before any step runs (model and benchmark files, patterns,
    columns): a stage class with a `preflight(config, spec, schema)` classmethod defines them.
    `schema` is the documents' schema as the first stage sees them (None: not read)."""
    for stage in spec.stages:
        check = getattr(load_stage_class(str(stage.type)), "preflight", None)
        if check is not None:
            check(stage, spec, schema)
