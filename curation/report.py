"""The human report: one self-contained HTML file with embedded plots.

Plots: documents through the pipeline, removals per stage and reason, distributions of the
numeric annotation columns (quality score, perplexity, curriculum signal, ...), duplicate
cluster sizes, and a sample of rejected documents per reason. Per dedup stage, the evidence:
the similarity histogram of its removals, a few removed documents next to the document they
duplicate with the differing passages marked, and (with MinHash verification) a sample of the
candidate pairs the verification rejected.

Everything is read in bounded amounts: histograms from at most REPORT_ROWS rows, texts only for
the sampled documents (`curation.lookup.find_documents`).
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import math
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import DUP_OF, SIMILARITY
from curation.dataset import concat, parquet_schema, read_table
from curation.layout import RunLayout
from curation.lookup import find_documents
from curation.tokens.report import token_sections

# Numeric columns worth a histogram when a stage wrote them.
SCORE_COLUMNS = ("quality_score", "perplexity", "curriculum_signal", "semantic_similarity", "cluster_density")
SAMPLES_PER_REASON = 3
SAMPLE_CHARS = 400


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_funnel(summary: dict[str, Any]) -> str:
    plt = _plt()
    stages = summary["stages"]
    names = [s["name"] for s in stages]
    kept = [s.get("docs_out", 0) for s in stages]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1))
    ax.barh(names[::-1], kept[::-1], color="#4c72b0")
    for y, v in enumerate(kept[::-1]):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel("documents kept after stage")
    ax.set_title("Documents through the pipeline")
    return _png(fig)


def plot_removals(summary: dict[str, Any]) -> str | None:
    rows = [(f"{s['name']}: {reason}", n) for s in summary["stages"] for reason, n in s.get("removed", {}).items()]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#c44e52")
    for y, (_, v) in enumerate(rows):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel("documents removed")
    ax.set_title("Removals per stage and reason")
    return _png(fig)


def plot_histogram(name: str, kept: list[float], rejected: list[float]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    data = [v for v in kept + rejected if v == v]
    import numpy as np

    bins = np.histogram_bin_edges(data, bins=40) if data else 1  # shared, so the bars compare
    if kept:
        ax.hist(kept, bins=bins, alpha=0.7, label=f"kept ({len(kept):,})", color="#4c72b0")
    if rejected:
        ax.hist(rejected, bins=bins, alpha=0.6, label=f"rejected ({len(rejected):,})", color="#c44e52")
    ax.set_title(f"Distribution of {name}")
    ax.legend()
    return _png(fig)


def plot_cluster_sizes(title: str, sizes: dict[str, int]) -> str:
    plt = _plt()
    # Keys are sizes ("3") or ranges ("128-255"); order by their lower bound.
    items = sorted(((str(k), int(v)) for k, v in sizes.items()), key=lambda kv: int(kv[0].split("-")[0]))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([k for k, _ in items], [v for _, v in items], color="#55a868")
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("cluster size (documents)")
    ax.set_ylabel("clusters")
    ax.set_title(title)
    return _png(fig)


def _numeric(table: pa.Table, column: str) -> list[float]:
    if column not in table.column_names or table.num_rows == 0:
        return []
    col = table.column(column)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return []
    return [float(v) for v in pc.drop_null(col).to_pylist()]


REPORT_ROWS = 200_000  # the histograms are drawn from at most this many documents (memory stays flat)


def _read(ds: Any, columns: list[str] | None = None) -> pa.Table:
    tables = []
    rows = 0
    for name in ds.shard_names():
        if rows >= REPORT_ROWS:
            break
        loc = ds.loc.join(name)
        have = set(parquet_schema(loc).names)
        tables.append(read_table(loc, [c for c in (columns or []) if c in have] if columns else None))
        rows += tables[-1].num_rows
    return concat(tables)


def build_report(layout: RunLayout, summary: dict[str, Any]) -> str:
    parts: list[str] = []
    totals = summary["totals"]
    parts.append(
        f"<p><b>{totals['input_docs']:,}</b> documents in, <b>{totals['real_output_docs']:,}</b> kept "
        f"({totals['kept_fraction']:.1%}), <b>{totals['rejected_docs']:,}</b> rejected, "
        f"<b>{totals['synthetic_docs']:,}</b> synthetic. Conservation: "
        f"<b>{'holds' if summary['conservation']['holds'] else 'VIOLATED'}</b>.</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{html.escape(s['type'])}</td><td>{s.get('docs_in', 0):,}</td>"
        f"<td>{s.get('docs_out', 0):,}</td><td>{s.get('docs_removed', 0):,}</td><td>{s.get('generated', 0):,}</td>"
        f"<td>{s.get('seconds', 0):.1f}</td></tr>"
        for s in summary["stages"]
    )
    parts.append(
        "<table><tr><th>stage</th><th>type</th><th>in</th><th>out</th><th>removed</th><th>generated</th>"
        f"<th>seconds</th></tr>{rows}</table>"
    )
    parts.extend(_source_tables(summary))
    parts.extend(token_sections(summary))  # output.tokenize: files, tokens per stage and source
    images = [("Documents through the pipeline", plot_funnel(summary))]
    removals = plot_removals(summary)
    if removals:
        images.append(("Removals", removals))
    wanted = list(SCORE_COLUMNS)
    kept = _read(layout.data, wanted)
    rejected = _read(layout.rejected, wanted)
    for column in SCORE_COLUMNS:
        k, r = _numeric(kept, column), _numeric(rejected, column)
        if column == "perplexity":  # spans orders of magnitude: compare on a log scale
            k, r = [math.log10(v) for v in k if v > 0], [math.log10(v) for v in r if v > 0]
            column = "log10(perplexity)"
        if k or r:
            images.append((f"Distribution of {column}", plot_histogram(column, k, r)))
    for s in summary["stages"]:
        extra = s.get("extra", {})
        for key, what in (("cluster_sizes", "duplicate cluster sizes"), ("kmeans_cluster_sizes", "k-means cluster sizes")):
            if extra.get(key):
                title = f"{s['name']}: {what}"
                images.append((title, plot_cluster_sizes(title, extra[key])))
    for title, png in images:
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    parts.append(_evidence(layout, summary, summary["input"].get("text_field", "text")))
    parts.append(_samples(layout, summary["input"].get("text_field", "text")))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
             "td:first-child,td:nth-child(2){text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;"
             "padding:.5em;font-size:.85em}del{background:#fbb;text-decoration:none}ins{background:#bfb;"
             "text-decoration:none}table.pair{table-layout:fixed;width:100%}table.pair td{vertical-align:top;"
             "text-align:left;width:50%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Thresher report</title><style>{style}</style>"
            f"</head><body><h1>Thresher curation report</h1>{''.join(parts)}</body></html>")


def _source_tables(summary: dict[str, Any]) -> list[str]:
    """Per source (a source-policy stage's accounting): documents in, removed by each earlier stage
    and by the policy, kept, loss and mixture weight."""
    out = []
    for s in summary["stages"]:
        sources = s.get("extra", {}).get("sources")
        if not isinstance(sources, dict) or not sources:
            continue
        order = [x["name"] for x in summary["stages"]]
        stages = sorted({name for row in sources.values() for name in row.get("removed_before", {})},
                        key=lambda n: (order.index(n) if n in order else len(order), n))
        reasons = sorted({name for row in sources.values() for name in row.get("removed_here", {})})
        head = "".join(f"<th>{html.escape(n)}</th>" for n in [*stages, *reasons])
        body = "".join(
            f"<tr><td>{html.escape(src)}</td><td>{row.get('input_docs', 0):,}</td>"
            + "".join(f"<td>{row.get('removed_before', {}).get(n, 0):,}</td>" for n in stages)
            + "".join(f"<td>{row.get('removed_here', {}).get(n, 0):,}</td>" for n in reasons)
            + f"<td>{row.get('kept_docs', 0):,}</td><td>{float(row.get('loss', 0.0)):.1%}</td>"
            f"<td>{float(row.get('weight', 1.0)):g}</td></tr>"
            for src, row in sorted(sources.items())
        )
        out.append(f"<h2>{html.escape(s['name'])}: documents per source</h2><table><tr><th>source</th><th>in</th>"
                   f"{head}<th>kept</th><th>loss</th><th>weight</th></tr>{body}</table>")
    return out


SAMPLE_SHARDS = 16  # sample rejected documents from the first shards only


def _samples(layout: RunLayout, text_col: str) -> str:
    """A few rejected documents per (stage, reason), so a person can judge each rule."""
    out = ["<h2>Sample rejected documents</h2>"]
    seen: dict[tuple[str, str], int] = {}
    for name in layout.rejected.shard_names()[:SAMPLE_SHARDS]:
        loc = layout.rejected.loc.join(name)
        schema = parquet_schema(loc).names
        table = read_table(loc, [c for c in ("stage", "reason", text_col) if c in schema])
        for row in table.slice(0, 200).to_pylist():
            key = (row["stage"], row["reason"])
            if seen.get(key, 0) >= SAMPLES_PER_REASON:
                continue
            seen[key] = seen.get(key, 0) + 1
            text = str(row.get(text_col, "") or "")[:SAMPLE_CHARS]
            out.append(f"<h3>{html.escape(key[0])} — {html.escape(key[1])}</h3><pre>{html.escape(text)}</pre>")
    return "".join(out)


DEDUP_TYPES = ("exact-dedup", "minhash-dedup", "semantic-dedup", "redundancy-control")
PAIRS_PER_STAGE = 4  # removed documents shown next to their survivor, per dedup stage
DIFF_CHARS = 1500  # characters of each text compared and shown


def plot_similarity(title: str, values: list[float]) -> str:
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3))
    low = min(values)
    ax.hist(values, bins=np.linspace(min(low, 1.0) - 1e-9, 1.0, 41), color="#8172b2")
    ax.set_xlabel("similarity to the document it duplicates")
    ax.set_ylabel("removed documents")
    ax.set_title(title)
    return _png(fig)


def _id_field(layout: RunLayout) -> str:
    """The id column of the published output (the spec's input.idField, else `id`)."""
    if layout.fingerprint.exists():
        field = layout.fingerprint.read_json().get("spec", {}).get("input", {}).get("idField")
        if field:
            return str(field)
    return "id"


def diff_html(removed: str, survivor: str) -> tuple[str, str]:
    """The two texts (first DIFF_CHARS characters) as HTML, words only in `removed` in <del> and
    words only in `survivor` in <ins> (difflib over words and the whitespace between them)."""
    a = re.split(r"(\s+)", removed[:DIFF_CHARS])
    b = re.split(r"(\s+)", survivor[:DIFF_CHARS])
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        x, y = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(x)
            right.append(y)
            continue
        if x:
            left.append(f"<del>{x}</del>")
        if y:
            right.append(f"<ins>{y}</ins>")
    more = lambda t: " …" if len(t) > DIFF_CHARS else ""  # noqa: E731
    return "".join(left) + more(removed), "".join(right) + more(survivor)


def _pick(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """`k` rows spread over the range of similarity: the least similar, the most, and between."""
    rows = sorted(rows, key=lambda r: (r.get(SIMILARITY) is None, r.get(SIMILARITY) or 0.0))
    if len(rows) <= k:
        return rows
    return [rows[round(i * (len(rows) - 1) / (k - 1))] for i in range(k)] if k > 1 else rows[:1]


def _evidence(layout: RunLayout, summary: dict[str, Any], text_col: str) -> str:
    """Per dedup stage: similarity histogram, removed documents next to their survivor, rejected
    verification candidates."""
    stages = [s for s in summary["stages"] if s.get("type") in DEDUP_TYPES]
    if not stages:
        return ""
    id_col = _id_field(layout)
    names = layout.rejected.shard_names()
    table = _read(layout.rejected, ["stage", SIMILARITY])
    out = ["<h2>Duplicate evidence</h2>"]
    candidates: dict[str, list[dict[str, Any]]] = {}
    for name in names[:SAMPLE_SHARDS]:
        loc = layout.rejected.loc.join(name)
        have = parquet_schema(loc).names
        if DUP_OF not in have or id_col not in have:
            continue
        rows = read_table(loc, [c for c in (id_col, "stage", DUP_OF, SIMILARITY) if c in have]).to_pylist()
        for row in rows:
            if row.get(DUP_OF) is not None:
                candidates.setdefault(row["stage"], []).append(row)
    for s in stages:
        title = f"{s['name']} ({s['type']})"
        out.append(f"<h3>{html.escape(title)}</h3>")
        values = []
        if table.num_rows and SIMILARITY in table.column_names:
            mine = table.filter(pc.equal(table.column("stage"), s["name"]))
            values = [float(v) for v in pc.drop_null(mine.column(SIMILARITY)).to_pylist()]
        if values:
            png = plot_similarity(f"{s['name']}: similarity of removals ({len(values):,})", values)
            out.append(f"<img alt='similarity of removals' src='data:image/png;base64,{png}'>")
        out.append(_pairs(layout, _pick(candidates.get(s["name"], []), PAIRS_PER_STAGE), id_col, text_col))
        out.append(_rejected_candidates(s))
    return "".join(out)


def _pairs(layout: RunLayout, rows: list[dict[str, Any]], id_col: str, text_col: str) -> str:
    if not rows:
        return "<p>No removal of this stage in the first shards.</p>"
    removed_ids = [r[id_col] for r in rows]
    survivor_ids = [r[DUP_OF] for r in rows]
    texts: dict[str, str] = {}
    for dataset, wanted in ((layout.rejected, removed_ids + survivor_ids), (layout.data, survivor_ids)):
        found = find_documents(dataset.loc, dataset.shard_names(), id_col, wanted, [text_col])
        for row in found.to_pylist():
            texts[str(row[id_col])] = str(row.get(text_col) or "")
    parts = []
    for r in rows:
        left, right = diff_html(texts.get(str(r[id_col]), ""), texts.get(str(r[DUP_OF]), ""))
        sim = r.get(SIMILARITY)
        parts.append(
            f"<table class='pair'><tr><th>removed {html.escape(str(r[id_col]))}"
            f"{f' (similarity {sim:.3f})' if sim is not None else ''}</th>"
            f"<th>kept {html.escape(str(r[DUP_OF]))}</th></tr>"
            f"<tr><td><pre>{left}</pre></td><td><pre>{right}</pre></td></tr></table>"
        )
    return "".join(parts)


def _rejected_candidates(stage: dict[str, Any]) -> str:
    verification = stage.get("extra", {}).get("verification", {})
    sample = [p for rank in sorted(verification.get("rejected_sample", {})) for p in
              verification["rejected_sample"][rank]]
    if not verification:
        return ""
    failed = stage.get("extra", {}).get("pairs_failed_verification", 0)
    total = stage.get("extra", {}).get("candidate_pairs", 0)
    head = (f"<p>Verification ({html.escape(str(verification.get('mode')))}, threshold "
            f"{verification.get('threshold')}): {failed:,} of {total:,} candidate pairs rejected.</p>")
    if not sample:
        return head
    measure = "Jaccard" if verification.get("mode") == "text" else "signature agreement"
    rows = "".join(
        f"<tr><td>{html.escape(str(p['a']))}</td><td>{html.escape(str(p['b']))}</td><td>{p['similarity']:.3f}</td>"
        f"<td>{p['estimate']:.3f}</td></tr>" if "estimate" in p else
        f"<tr><td>{html.escape(str(p['a']))}</td><td>{html.escape(str(p['b']))}</td><td>{p['similarity']:.3f}</td>"
        "<td></td></tr>"
        for p in sample
    )
    return (head + f"<table><tr><th>document</th><th>candidate partner</th><th>{measure}</th>"
            f"<th>signature estimate</th></tr>{rows}</table>")


def write_report(layout: RunLayout, summary: dict[str, Any]) -> None:
    layout.report.write_bytes_atomic(build_report(layout, summary).encode("utf-8"))
