"""The stage registry: every stage type the engine knows, found in one place.

A stage type is declared once, as `STAGE = StageDef(...)` (or `STAGES = (...)`) in its parameter
module under `curation/params/`, next to its params model; its step code lives in the class that
`StageDef.impl` names. The spec's stage union, the CRD, the plan's steps, the runner's stage
classes, `thresher models` and preflight's column checks are all derived from these declarations:
adding a stage is its params module, its stage module and its tests (then `make manifests`).

This module imports only pydantic models (the parameter modules), so the operator can use it.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import curation.params as params_package
from curation.params.base import StageDef


@cache
def stage_defs() -> tuple[StageDef, ...]:
    """Every declared stage type, in their declared `order`."""
    found: list[StageDef] = []
    for info in sorted(pkgutil.iter_modules(params_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{params_package.__name__}.{info.name}")
        declared = getattr(module, "STAGES", None) or (
            (module.STAGE,) if hasattr(module, "STAGE") else ())
        found.extend(declared)
    types = [d.type for d in found]
    repeated = sorted({t for t in types if types.count(t) > 1})
    if repeated:
        raise RuntimeError(f"stage types declared twice: {', '.join(repeated)}")
    return tuple(sorted(found, key=lambda d: (d.order, d.type)))


@cache
def by_type() -> dict[str, StageDef]:
    return {d.type: d for d in stage_defs()}


def stage_def(type_name: str) -> StageDef:
    from curation.errors import SpecError

    try:
        return by_type()[type_name]
    except KeyError:
        raise SpecError(f"unknown stage type '{type_name}'; known: {', '.join(sorted(by_type()))}") from None
