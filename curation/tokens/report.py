"""The report's token section (`output.tokenize`): files, tokens per stage and per source."""

from __future__ import annotations

import html
from typing import Any

SOURCES_SHOWN = 50  # the sources with the most input tokens; the rest in one row
REASONS_SHOWN = 6


def _n(value: Any) -> str:
    return f"{int(value):,}"


def token_sections(summary: dict[str, Any]) -> list[str]:
    tokens = summary.get("tokens")
    if not tokens:
        return []
    per_doc = tokens["tokens"] / tokens["documents"] if tokens["documents"] else 0.0
    eos = f"EOS id {tokens['eos_id']} after each document" if tokens.get("eos_id") is not None else "no EOS"
    dtype = tokens.get("dtype", {})
    parts = [
        "<h2>Tokens</h2>",
        f"<p><b>{_n(tokens['tokens'])}</b> tokens in <b>{_n(tokens['documents'])}</b> documents "
        f"({per_doc:,.1f} per document, {eos}), tokenizer <code>{html.escape(tokens['tokenizer'])}</code> "
        f"(vocabulary {_n(tokens['vocab_size'])}), in {tokens['order']} order; "
        f"{_n(tokens['files'])} merged file(s), {tokens['bytes'] / 2**20:,.1f} MiB under "
        f"<code>{html.escape(str(tokens['path']))}</code> "
        f"({', '.join(html.escape(f) for f in tokens['formats'])}; megatron {html.escape(dtype.get('megatron', ''))}, "
        f"numpy {html.escape(dtype.get('numpy', ''))}).</p>",
    ]
    speed = tokens.get("throughput") or {}
    if speed.get("tokens_per_second_per_rank"):
        per_core = speed.get("tokens_per_cpu_second")
        parts.append(f"<p>Encoding: {_n(speed['tokens_encoded'])} tokens (kept and rejected) in "
                     f"{speed['encode_seconds']:,.1f} rank-seconds, {_n(speed['tokens_per_second_per_rank'])} "
                     "tokens/s per rank" + (f", {_n(per_core)} per CPU-second" if per_core else "") + ".</p>")
    stages = tokens.get("per_stage")
    if stages:
        rows = "".join(
            f"<tr><td>{html.escape(s['stage'])}</td><td>{_n(s['tokens_in'])}</td><td>{_n(s['docs_removed'])}</td>"
            f"<td>{_n(s['tokens_removed'])}</td><td>{s['removed_fraction']:.1%}</td><td>{_n(s['tokens_out'])}</td>"
            f"<td>{html.escape(_top_reasons(s['reasons']))}</td></tr>"
            for s in stages)
        parts.append(
            "<h3>Tokens per stage</h3><p>Tokens of the documents each stage removed, counted on the published "
            "text with the same tokenizer (EOS included); real documents only, so the last stage's output is "
            "the real documents' tokens in the files.</p>"
            "<table><tr><th>stage</th><th>tokens in</th><th>docs removed</th><th>tokens removed</th>"
            f"<th>removed</th><th>tokens out</th><th>top reasons (tokens)</th></tr>{rows}</table>")
    sources = tokens.get("per_source") or {}
    if sources:
        named = [kv for kv in sources.items() if not kv[0].startswith("(other")]
        ranked = sorted(named, key=lambda kv: -(kv[1]["tokens"] + kv[1]["removed_tokens"]))
        shown, rest = ranked[:SOURCES_SHOWN], ranked[SOURCES_SHOWN:]
        rest += [kv for kv in sources.items() if kv[0].startswith("(other")]  # summary.json's own remainder
        if rest:
            other = {k: sum(r[k] for _, r in rest) for k in ("docs", "tokens", "removed_docs", "removed_tokens")}
            shown.append(("(all other sources)", other))
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{_n(r['docs'])}</td><td>{_n(r['tokens'])}</td>"
            f"<td>{_n(r['removed_docs'])}</td><td>{_n(r['removed_tokens'])}</td>"
            f"<td>{_share(r['tokens'], r['tokens'] + r['removed_tokens'])}</td></tr>"
            for name, r in shown)
        parts.append("<h3>Tokens per source</h3><table><tr><th>source</th><th>docs kept</th><th>tokens kept</th>"
                     f"<th>docs removed</th><th>tokens removed</th><th>kept share</th></tr>{rows}</table>")
    return parts


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _top_reasons(reasons: dict[str, dict[str, int]]) -> str:
    ranked = sorted(reasons.items(), key=lambda kv: -kv[1]["tokens"])
    text = ", ".join(f"{name} {row['tokens']:,}" for name, row in ranked[:REASONS_SHOWN])
    return text + (f", … {len(ranked) - REASONS_SHOWN} more" if len(ranked) > REASONS_SHOWN else "")
