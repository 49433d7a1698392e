"""The `thresher` command line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from curation.errors import CurationError, DiskFullError
from curation.spec import PipelineSpec


def cmd_run(args: argparse.Namespace) -> int:
    from curation.executor import with_output, with_paths
    from curation.runner import describe_summary, run_pipeline
    from curation.spec import load_spec

    spec = with_paths(with_output(load_spec(args.spec), args.output), args.input, args.models)
    started = time.monotonic()
    summary = run_pipeline(spec, workers=args.workers, progress=not args.quiet, restart=args.restart,
                           notify=lambda line: print(line, file=sys.stderr))
    print(describe_summary(summary))
    out = spec.output.path.rstrip("/")
    print(f"done in {time.monotonic() - started:.1f}s: {out}/data, {out}/rejected, {out}/summary.json, "
          f"{out}/report.html")
    return 0


def describe_plan(spec_path: str, spec: PipelineSpec) -> str:
    from curation.plan import plan_steps

    lines = [f"{spec_path}: valid. {len(spec.stages)} stage(s), parallelism {spec.parallelism}."]
    for stage in spec.stages:
        lines.append(f"  stage {stage.stage_name} ({stage.type.value})")
        if stage.type == "minhash-dedup":
            p = stage.params
            curve = ", ".join(f"J={s:.1f}: {p.detection_probability(s):.0%}" for s in (0.5, 0.6, 0.7, 0.8, 0.9))
            lines.append(
                f"    MinHash {p.ngram}-grams, {p.bands} bands x {p.rows_per_band} rows = {p.num_perm} hashes; "
                f"S-curve threshold ~{p.threshold():.2f}; P(found) = 1-(1-J^{p.rows_per_band})^{p.bands}: {curve}"
            )
        lines.extend(f"    {line}" for line in getattr(stage.params, "describe", list)())
        if stage.resources.gpus:
            lines.append(f"    resources: {stage.resources.gpus} GPU(s) per rank")
    tok = spec.output.tokenize
    if tok is not None:
        eos = (f"id {tok.eos_id}" if tok.eos_id is not None else tok.eos_token or "the tokenizer's EOS/SEP") \
            if tok.append_eos else "none"
        lines.append(f"  output.tokenize: tokenizer {tok.tokenizer}, formats {', '.join(tok.formats)}, "
                     f"EOS after each document: {eos}; files of ~{tok.file_bytes / 1e6:,.1f} MB of tokens in "
                     f"{spec.output.path.rstrip('/')}/tokens")
    lines.append("  steps:")
    for step in plan_steps(spec):
        gpu = f", {step.gpus} GPU" if step.gpus else ""
        lines.append(f"    {step.id:<32} {step.kind.value:<7} ranks={step.world_size}{gpu}")
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    from curation.spec import load_spec

    spec = load_spec(args.spec)
    print(describe_plan(args.spec, spec))
    if args.check_data:
        from curation.preflight import preflight

        survey = preflight(spec)
        print(f"  input: {survey.documents:,} documents found in {survey.files:,} file(s)")
        if survey.skipped_note():
            print(f"  {survey.skipped_note()}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from curation.worker import run_worker

    return run_worker(args.spec, args.step, args.rank, args.world_size, args.output, args.termination_log,
                      args.metrics_port, input_path=args.input, models_path=args.models,
                      eval_set=args.eval_set)


def cmd_crd(args: argparse.Namespace) -> int:
    from curation.crd import main as crd_main

    argv = ["--write", *([args.write] if args.write else [])] if args.write is not None else []
    if args.check is not None:
        argv = ["--check", *([args.check] if args.check else [])]
    return crd_main(argv)


def cmd_report(args: argparse.Namespace) -> int:
    from curation.layout import RunLayout
    from curation.report import write_report

    configure_storage(args.spec)
    layout = RunLayout.of(args.output)
    if not layout.summary.exists():
        raise CurationError(f"{args.output}: no summary.json (is this a finished Thresher output folder?)")
    summary = layout.summary.read_json()
    write_report(layout, summary)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from curation.runner import describe_summary

        print(describe_summary(summary))
    print(f"report: {layout.report.path}")
    return 0


def configure_storage(spec_path: str | None) -> None:
    """Object-store settings for a command that reads an output folder: the spec's `storage`, or
    without `--spec` the standard AWS variables (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, keys)."""
    from curation import storage
    from curation.spec import load_spec

    storage.configure(load_spec(spec_path).storage if spec_path else None)


SPEC_FOR_STORAGE = ("the pipeline spec whose spec.storage reaches an s3:// output (default: the AWS "
                    "variables, e.g. AWS_ENDPOINT_URL_S3)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description="Curate LLM-pretraining data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a pipeline locally (no cluster needed)")
    p.add_argument("spec", help="pipeline spec or CurationJob YAML")
    p.add_argument("--output", help="override output.path")
    p.add_argument("--input", help="override input.path")
    p.add_argument("--models", help="override models.path")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--restart", action="store_true",
                   help="delete this output's previous (Thresher) run and start again, e.g. after the input changed")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a spec and print its plan")
    p.add_argument("spec")
    p.add_argument("--check-data", action="store_true", help="also open the input and count documents")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("worker", help="run one rank of one step (what step pods run)")
    p.add_argument("--spec", required=True)
    p.add_argument("--step", required=True, help="step id, e.g. minhash-dedup.signatures")
    p.add_argument("--rank", type=int, default=None, help="default: $JOB_COMPLETION_INDEX")
    p.add_argument("--world-size", type=int, default=None, help="must match the plan")
    p.add_argument("--input", default=None, help="override input.path (e.g. the input PVC's mount path)")
    p.add_argument("--output", default=None, help="override output.path")
    p.add_argument("--models", default=None, help="override models.path")
    p.add_argument("--eval-set", default=None, help="override evaluate.evalSet (its path in the pod)")
    p.add_argument("--termination-log", default=None, help="default: $THRESHER_TERMINATION_LOG or /dev/termination-log")
    p.add_argument("--metrics-port", type=int, default=None, help="default: $THRESHER_METRICS_PORT or 9400; 0 = off")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("crd", help="print (or --write/--check) the CurationJob CustomResourceDefinition")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", nargs="?", const="", default=None, metavar="PATH",
                       help="write the YAML (default: manifests/crd/)")
    group.add_argument("--check", nargs="?", const="", default=None, metavar="PATH",
                       help="fail if the committed YAML differs")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("report", help="rebuild report.html from an output folder and print the summary")
    p.add_argument("output")
    p.add_argument("--json", action="store_true")
    p.add_argument("--spec", default=None, help=SPEC_FOR_STORAGE)
    p.set_defaults(func=cmd_report)

    __import__("curation.cli_explain", fromlist=["add_parsers"]).add_parsers(sub)  # thresher explain
    __import__("curation.cli_eval", fromlist=["add_parsers"]).add_parsers(sub)  # thresher eval, holdout
    _add_optional(sub)
    return parser


def _add_optional(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Subcommands from optional modules (model tooling)."""
    try:
        from curation import cli_models
    except ImportError:
        return
    cli_models.add_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CurationError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: disk full writing{where} ({os.strerror(err.errno)}); free space and rerun; the run resumes",
              file=sys.stderr)
        return DiskFullError.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
