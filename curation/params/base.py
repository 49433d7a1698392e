"""Shared pydantic base: camelCase on the wire (Kubernetes style), snake_case in Python."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Strict model: unknown fields are errors; both ``rowsPerBand`` and ``rows_per_band`` accepted."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


# ---- what a stage declares (read by the spec, the plan, the CRD and the runner) ----------------


class StepKind(StrEnum):
    MAP = "map"  # each rank takes shards i with i % world_size == rank
    REDUCE = "reduce"  # each rank takes one partition of intermediate files
    GLOBAL = "global"  # a single rank sees everything (small aggregated data only)


@dataclass(frozen=True)
class StepDef:
    """One step of a stage: its name, how ranks split the work, whether it runs on the GPUs."""

    name: str
    kind: StepKind
    gpu: bool = False


@dataclass(frozen=True)
class StageDef:
    """Everything the engine needs to know about a stage type, declared next to its parameters.

    `impl` names the class with the step code ("module:Class"), imported only when a step runs,
    so that the spec, the plan, the CRD and the operator never load numpy-heavy or torch code.
    `steps` are in order; the last one writes the stage's decisions. `roles` are the model fields
    (dotted paths into the params) that `thresher models` checks, with what each is. `produces`
    are the annotation columns the stage adds (name -> Arrow type name), so preflight can check
    that a later stage's column exists."""

    type: str
    order: int  # position in listings (the CRD's enum, `thresher validate`, docs)
    params: builtins.type[BaseModel]
    steps: tuple[StepDef, ...]
    impl: str
    title: str
    roles: tuple[tuple[str, str], ...] = ()
    produces: tuple[tuple[str, str], ...] | None = ()  # None: not declared (any column may follow)

    @property
    def uses_gpu(self) -> bool:
        return any(s.gpu for s in self.steps)
