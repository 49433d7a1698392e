"""Preflight: every check the spec and the input's schema allow, made before any step runs.

`thresher validate --check-data` and the start of `thresher run` call :func:`preflight`. It reads
only Parquet footers (JSON lines: the first block of each file for the schema, and the lines for
the count) and writes nothing, so a mistake that would otherwise surface after hours of work
(a curriculum signal naming a missing column, a column whose type differs between files) is
reported in a second, naming the file or field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.dataset import ID, TEXT, Location
from curation.errors import InputDataError, SpecError
from curation.registry import stage_def
from curation.spec import PipelineSpec, StageType

HIDDEN_NOTE = "whose path has a component starting with '_' or '.'"


@dataclass(frozen=True)
class InputSurvey:
    """What preflight found: documents and files read, files skipped (full paths)."""

    documents: int
    files: int
    skipped: tuple[str, ...]

    def skipped_note(self) -> str | None:
        """One line saying how many input files are skipped and why (None when none is)."""
        if not self.skipped:
            return None
        n = len(self.skipped)
        return (f"skipped {n} file{'s' if n > 1 else ''} {HIDDEN_NOTE} (e.g. {self.skipped[0]}); "
                "rename them to include them")


def preflight(spec: PipelineSpec) -> InputSurvey:
    """Check paths, every input file's schema and the columns stages name; fail before anything is
    written. Returns what was found."""
    storage.configure(spec.storage)
    from curation.stages import preflight_stages
    from curation.stages.ingest import require_documents, scan_input

    check_paths(spec)
    files, skipped = scan_input(spec)  # also refuses a folder without input files, and aliased files
    schemas = [(f, input_schema(spec, f)) for f in files]
    for f, schema in schemas:
        check_file_schema(spec, f, schema)
    check_same_schema(spec, schemas)
    first = canonical_schema(spec, next((s for _, s in schemas if s.names), pa.schema([])))
    check_stage_columns(spec, first)
    preflight_stages(spec, first)  # model files, benchmarks, patterns
    if spec.output.tokenize is not None:  # the tokenizer loads and names its EOS, before any work
        from curation.tokens.tokenizer import check_tokenizer

        check_tokenizer(spec)
    root = spec.input.path.rstrip("/")
    return InputSurvey(require_documents(spec), len(files), tuple(f"{root}/{n}" for n in skipped))


# ---- paths -------------------------------------------------------------------------------------


def check_paths(spec: PipelineSpec) -> None:
    """The output is a folder (or can become one) and overlaps neither the input nor the models."""
    out = Location.of(spec.output.path)
    for what, uri, write in (("input.path", spec.input.path, False), ("output.path", spec.output.path, True),
                             ("models.path", spec.models.path, False)):
        if storage.is_uri(uri):
            storage.check_access(Location.of(uri), what, uri, write=write)
    for what, other in (("input.path", spec.input.path), ("models.path", spec.models.path)):
        loc = Location.of(other)
        if type(loc.fs) is not type(out.fs):
            continue
        a, b = _resolved(loc), _resolved(out)
        if a.startswith(b) or b.startswith(a):
            raise SpecError(
                f"output.path {spec.output.path} and {what} {other} overlap"
                f"{' (after following symbolic links)' if (a, b) != (loc.path + '/', out.path + '/') else ''}; "
                "the output must be outside them (inputs are never modified)"
            )
    if out.exists() and not out.is_dir():
        raise SpecError(f"output.path {spec.output.path} is a file; choose a folder")
    if out.fs.type_name != "local":
        return
    if os.path.islink(out.path) and not os.path.exists(out.path):
        raise SpecError(f"output.path {spec.output.path} is a dangling symbolic link; remove it or choose another")
    parent = os.path.dirname(out.path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise SpecError(f"output.path {spec.output.path}: {parent} is a file; choose a folder")


def _resolved(loc: Location) -> str:
    """A local path with every symbolic link followed (compare real places, not names)."""
    path = os.path.realpath(loc.path) if loc.fs.type_name == "local" else loc.path
    return path.rstrip("/") + "/"


# ---- input schema ------------------------------------------------------------------------------


def input_schema(spec: PipelineSpec, f: Location) -> pa.Schema:
    """A file's columns: the Parquet footer, or the types of a JSON lines file's first block."""
    from curation.stages.ingest import input_batches

    if spec.input.format == "parquet":
        try:
            return pq.read_schema(f.path, filesystem=f.fs)
        except (pa.ArrowInvalid, OSError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputDataError(f"{f.path}: not a readable Parquet file ({msg}); replace or remove it and rerun") \
                from None
    for batch in input_batches(spec, f):
        return batch.schema
    return pa.schema([])


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)
                or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype))


def _is_id(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)
                or pa.types.is_integer(dtype))


def check_file_schema(spec: PipelineSpec, f: Location, schema: pa.Schema) -> None:
    """What ingest checks per file, from the schema alone: required and reserved columns, types."""
    from curation.stages.ingest import check_columns

    if not schema.names:
        return  # an empty JSON lines file: nothing to check, nothing to read
    inp = spec.input
    check_columns(inp, schema.names, f)
    text_type = schema.field(inp.text_field).type
    if not _is_text(text_type) and not pa.types.is_null(text_type):
        raise InputDataError(f"{f.path}: text column '{inp.text_field}' has type {text_type}, expected string")
    if inp.id_field is not None:
        id_type = schema.field(inp.id_field).type
        if not _is_id(id_type) and not pa.types.is_null(id_type):
            raise InputDataError(
                f"{f.path}: id column '{inp.id_field}' has type {id_type}; ids must be strings or integers "
                "(a float or nested id cannot be compared exactly)"
            )


def _comparable(spec: PipelineSpec, schema: pa.Schema) -> list[list[str]]:
    """Column names and types as ingest stores them: id and text first, large and view strings as
    strings (the user's names are kept, for the message)."""
    inp = spec.input
    first = [n for n in (inp.id_field, inp.text_field) if n is not None and n in schema.names]
    out = []
    for name in [*first, *[n for n in schema.names if n not in first]]:
        dtype = schema.field(name).type
        if not pa.types.is_null(dtype) and (
            name == inp.text_field or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)
        ):
            dtype = pa.string()
        out.append([name, str(dtype)])
    return out


def check_same_schema(spec: PipelineSpec, schemas: list[tuple[Location, pa.Schema]]) -> None:
    """Every input file has the first file's columns with the same types (a null column matches any)."""
    from curation.stages.ingest import _compare_schemas

    with_columns = [(f, s) for f, s in schemas if s.names]
    if not with_columns:
        return
    first, reference = with_columns[0]
    for f, schema in with_columns[1:]:
        _compare_schemas((first.path, _comparable(spec, reference)), (f.path, _comparable(spec, schema)))


# ---- columns the stages name -------------------------------------------------------------------


def canonical_schema(spec: PipelineSpec, schema: pa.Schema) -> pa.Schema:
    """The documents as the first stage sees them: `id`, `text`, then the user's other columns."""
    inp = spec.input
    id_type = schema.field(inp.id_field).type if inp.id_field and inp.id_field in schema.names else pa.string()
    fields = [pa.field(ID, id_type), pa.field(TEXT, pa.string())]
    fields += [f for f in schema if f.name not in (inp.text_field, inp.id_field)]
    return pa.schema(fields)


# The annotation columns each stage type adds for the stages after it come from its declaration
# (`StageDef.produces`, see curation/registry.py); heuristic-filter and quality-score add more
# depending on their parameters (`columns_made_by`). A stage type that declares `produces=None`
# makes the schema "open": a column it may have made is not refused.


def declared_outputs(stage_type: str) -> dict[str, pa.DataType] | None:
    produces = stage_def(stage_type).produces
    if produces is None:
        return None
    return {name: pa.type_for_alias(dtype) for name, dtype in produces}


def columns_made_by(stage: Any) -> list[pa.Field]:
    """The annotation columns `stage` adds for the stages after it."""
    params = getattr(stage, "params", None)
    made = dict(declared_outputs(str(stage.type)) or {})
    if stage.type == StageType.HEURISTIC_FILTER and params is not None and params.c4.line_removal != "off":
        made["c4_lines_removed"] = pa.int64()
        if params.c4.line_removal == "annotate":
            made["c4_text"] = pa.string()
    if stage.type == StageType.QUALITY_SCORE and params is not None:
        if params.classifier is not None:
            made["quality_score"] = pa.float64()
        if params.perplexity_model is not None:
            made["perplexity"] = pa.float64()
    return [pa.field(name, dtype) for name, dtype in made.items()]


def check_stage_columns(spec: PipelineSpec, schema: pa.Schema) -> None:
    """Columns named in stage parameters exist (in the input or made by an earlier stage) and have
    a usable type — the checks the stages make themselves, moved before the first step (a stage
    class's own checks run in `curation.stages.preflight_stages`)."""
    from curation.stages.curriculum import signal_source

    open_schema = False  # an earlier stage that declares no outputs may have made any column
    for i, stage in enumerate(spec.stages):
        params = getattr(stage, "params", None)
        if stage.type == StageType.CURRICULUM and params is not None and (
            params.signal in schema.names or not open_schema
        ):
            signal_source(schema, params.signal, f"spec.stages[{i}].params.signal")
        if (stage.type == StageType.SEMANTIC_DEDUP and params is not None and params.keep == "highest-quality"
                and params.quality_column not in schema.names and not open_schema):
            raise SpecError(
                f"stage {stage.stage_name}: keep highest-quality needs column '{params.quality_column}' in its "
                "input; add a quality-score stage before it or set qualityColumn"
            )
        open_schema = open_schema or declared_outputs(str(stage.type)) is None
        for field in columns_made_by(stage):
            if field.name not in schema.names:
                schema = schema.append(field)
