"""The human report: one self-contained HTML file with embedded plots.

Plots: documents through the pipeline, removals per stage and reason, distributions of the
numeric annotation columns (quality score, perplexity, curriculum signal, ...), duplicate
cluster sizes, and a sample of rejected documents per reason.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.dataset import concat, parquet_schema, read_table
from curation.layout import RunLayout

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
    parts.append(_samples(layout, summary["input"].get("text_field", "text")))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
             "td:first-child,td:nth-child(2){text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;"
             "padding:.5em;font-size:.85em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Thresher report</title><style>{style}</style>"
            f"</head><body><h1>Thresher curation report</h1>{''.join(parts)}</body></html>")


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


def write_report(layout: RunLayout, summary: dict[str, Any]) -> None:
    layout.report.write_bytes_atomic(build_report(layout, summary).encode("utf-8"))
