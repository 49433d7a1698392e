"""`thresher explain ID --output DIR`: every stage's decision about one document, with its evidence.

Works on a finished output folder. The published output is enough: a document is either in
`data/` (every stage kept it) or in `rejected/` (the stage that removed it, the reason and the
evidence: `dup_of`, `similarity`, ...; every stage before kept it, no stage after saw it). With
`output.keepWork` the per-stage decision files under `_work/` are read too, so each stage's own
annotations are shown as that stage wrote them.

Documents are found by id without loading the output (`curation.lookup.find_documents`): row
groups whose id statistics exclude the id are skipped, the id column of the others is compared,
and the other columns are read only from the row group that holds the document.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import CurationError
from curation.lookup import find_documents

TEXT_CHARS = 300
SURVIVOR_LIST = 10  # removed duplicates listed for a survivor
EVIDENCE_LABELS = {
    "exact-dedup": "identical after normalisation",
    "semantic-dedup": "cosine of the embeddings",
    "redundancy-control": "cosine with the cluster's kept document nearest its centroid",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain", help="print every stage's decision about one document, with evidence")
    p.add_argument("id", help="the document's id (as in the input's id field)")
    p.add_argument("--output", required=True, help="a finished output folder")
    p.add_argument("--id-field", default=None, help="default: the spec's input.idField, else `id`")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--spec", default=None, help="the pipeline spec whose spec.storage reaches an s3:// output "
                                                "(default: the AWS variables, e.g. AWS_ENDPOINT_URL_S3)")
    p.set_defaults(func=cmd_explain)


# ---- finding rows --------------------------------------------------------------------------------


def _shard_names(dataset: Any) -> list[str]:
    return [n for n in dataset.shard_names() if n.startswith("part-")]


def _locate(layout: Any, id_field: str, value: str) -> tuple[str, dict[str, Any]] | None:
    """("data" | "rejected", the row) of a document in the published output."""
    for where, dataset in (("data", layout.data), ("rejected", layout.rejected)):
        rows = find_documents(dataset.loc, _shard_names(dataset), id_field, [value], limit=1)
        if rows.num_rows:
            return where, rows.slice(0, 1).to_pylist()[0]
    return None


def _removed_duplicates(layout: Any, id_field: str, value: str) -> list[dict[str, Any]]:
    """Rejected documents whose `dup_of` names this one (id, stage, reason, similarity)."""
    from curation.corpus import DUP_OF

    rows = find_documents(layout.rejected.loc, _shard_names(layout.rejected), DUP_OF, [value],
                          columns=[id_field, "stage", "reason", "similarity"])
    return [{"id": r.get(id_field), "stage": r.get("stage"), "reason": r.get("reason"),
             "similarity": r.get("similarity")} for r in rows.to_pylist()]


# ---- the per-stage decisions under _work (output.keepWork) -----------------------------------------


def _work_decisions(layout: Any, spec: dict[str, Any], value: str) -> dict[str, dict[str, Any]] | None:
    """Per stage name, the decision row about the document (None where the _work folder is gone)."""
    from curation.dataset import ID, read_table
    from curation.plan import stage_dir_name

    corpus = layout.corpus
    if not corpus.loc.join(corpus.INDEX).exists():
        return None
    found: tuple[int, int] | None = None
    for shard in range(corpus.num_shards):  # the id column of each canonical shard until found
        ids = corpus.read(shard, [ID]).column(ID)
        try:
            typed = pa.scalar(value).cast(ids.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        at = pc.index(ids, typed).as_py()
        if at is not None and at >= 0:
            found = (shard, int(at))
            break
    if found is None:
        return None
    shard, row = found
    out: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(spec.get("stages", []), start=1):
        name = stage.get("name") or stage["type"]
        loc = layout.work.join(stage_dir_name(i, name), "decisions", f"part-{shard:05d}.parquet")
        if not loc.exists():
            continue
        table = read_table(loc)
        hit = table.filter(pc.equal(table.column("_row"), row))
        if hit.num_rows:
            out[name] = {k: v for k, v in hit.to_pylist()[0].items() if k not in ("_row", "_bytes", "text")}
    return out


# ---- putting it together ---------------------------------------------------------------------------


def explain(output: str, value: str, id_field: str | None = None) -> dict[str, Any]:
    from curation.corpus import EVIDENCE
    from curation.layout import RunLayout

    layout = RunLayout.of(output)
    if not layout.summary.exists():
        raise CurationError(f"{output}: no summary.json (is this a finished Thresher output folder?)")
    summary = layout.summary.read_json()
    spec: dict[str, Any] = {}
    if layout.fingerprint.exists():
        spec = layout.fingerprint.read_json().get("spec", {})
    field = id_field or spec.get("input", {}).get("idField") or "id"
    text_field = summary.get("input", {}).get("text_field", "text")
    hit = _locate(layout, field, value)
    if hit is None:
        raise CurationError(f"{output}: no document with {field} = {value!r} in data/ or rejected/")
    where, row = hit
    stages = summary.get("stages", [])
    removed_at = row.get("stage") if where == "rejected" else None
    index_of = {s["name"]: i for i, s in enumerate(stages)}
    decisions = _work_decisions(layout, spec, value)
    evidence = {k: row[k] for k in EVIDENCE if row.get(k) is not None}
    result: dict[str, Any] = {"id": value, "output": output, "where": where, "text": _clip(row.get(text_field)),
                              "stages": []}
    for i, s in enumerate(stages):
        entry: dict[str, Any] = {"stage": s["name"], "type": s["type"]}
        if removed_at is None or i < index_of.get(removed_at, -1):
            entry["decision"] = "kept"
        elif s["name"] == removed_at:
            entry.update(decision="removed", reason=row.get("reason"), evidence=evidence)
            label = _similarity_label(s)
            if label and "similarity" in evidence:
                entry["similarity_means"] = label
        else:
            entry["decision"] = "not reached"
        if decisions is not None and s["name"] in decisions:
            entry["decision_file"] = decisions[s["name"]]
        result["stages"].append(entry)
    skip = {field, text_field, "stage", "reason", *EVIDENCE}
    result["annotations"] = {k: v for k, v in row.items() if k not in skip and v is not None}
    dup_of = evidence.get("dup_of")
    if dup_of is not None:
        partner = _locate(layout, field, str(dup_of))
        result["dup_of"] = {"id": dup_of, "where": partner[0] if partner else "missing",
                            "text": _clip(partner[1].get(text_field)) if partner else None}
        if partner and partner[0] == "rejected":
            result["dup_of"].update(stage=partner[1].get("stage"), reason=partner[1].get("reason"))
    duplicates = _removed_duplicates(layout, field, value)
    if duplicates:
        result["removed_duplicates"] = {"count": len(duplicates), "first": duplicates[:SURVIVOR_LIST]}
    return result


def _similarity_label(stage: dict[str, Any]) -> str | None:
    if stage["type"] == "minhash-dedup":
        mode = stage.get("extra", {}).get("verification", {}).get("mode")
        if mode == "text":
            return "exact Jaccard of the shingle sets (similarity_estimate: the signature estimate)"
        return "signature estimate of the shingle Jaccard"
    return EVIDENCE_LABELS.get(stage["type"])


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def render(result: dict[str, Any]) -> str:
    lines = [f"document {result['id']}: " + ("in data/ (kept by every stage)" if result["where"] == "data"
                                             else "in rejected/")]
    for i, entry in enumerate(result["stages"], start=1):
        head = f"  {i}. {entry['stage']}" + (f" ({entry['type']})" if entry.get("type", entry["stage"]) != entry["stage"]
                                             else "")
        decision = entry["decision"] + (f": {entry['reason']}" if entry.get("reason") else "")
        lines.append(f"{head:<40} {decision}")
        for key, value in entry.get("evidence", {}).items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"       {key:<20} {shown}")
        if entry.get("similarity_means"):
            lines.append(f"       {'(similarity is':<20} {entry['similarity_means']})")
        extra = {k: v for k, v in entry.get("decision_file", {}).items() if k != "reason" and v is not None}
        if extra and entry["decision"] == "kept":
            lines.append("       wrote: " + ", ".join(f"{k}={_short(v)}" for k, v in extra.items()))
    if result.get("annotations"):
        lines.append("  annotations: " + ", ".join(f"{k}={_short(v)}" for k, v in result["annotations"].items()))
    if result.get("dup_of"):
        d = result["dup_of"]
        status = "kept (in data/)" if d["where"] == "data" else (
            f"removed later by {d.get('stage')}: {d.get('reason')}" if d["where"] == "rejected" else "NOT FOUND")
        lines.append(f"  dup_of {d['id']}: {status}")
    if result.get("removed_duplicates"):
        r = result["removed_duplicates"]
        names = ", ".join(f"{x['id']} ({x['stage']}, {_short(x['similarity'])})" for x in r["first"])
        lines.append(f"  survivor of {r['count']} removed duplicate(s): {names}")
    lines.append(f"  text: {result['text']!r}")
    if result.get("dup_of") and result["dup_of"].get("text") is not None:
        lines.append(f"  dup_of text: {result['dup_of']['text']!r}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_explain(args: argparse.Namespace) -> int:
    from curation.cli import configure_storage

    configure_storage(args.spec)
    result = explain(args.output, args.id, args.id_field)
    print(json.dumps(result, indent=2, default=str) if args.json else render(result))
    return 0
