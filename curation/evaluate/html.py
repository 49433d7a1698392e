"""eval.html: held-out loss against tokens seen, one curve per arm, as inline SVG (no scripts,
no external files: the page opens in an air-gapped browser), and the tables of eval.json."""

from __future__ import annotations

import html
import math
from typing import Any

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 340, 64, 150, 20, 48


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt_tokens(v: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def loss_svg(title: str, curves: dict[str, dict[str, list[float]]]) -> str:
    """curves: arm -> {tokens, mean, min, max}; the band is the min-max over seeds."""
    xs = [x for c in curves.values() for x in c["tokens"]]
    ys = [y for c in curves.values() for k in ("min", "max") for y in c[k]]
    x0, x1 = 0.0, max(xs)
    pad = (max(ys) - min(ys)) * 0.08 or 0.05
    y0, y1 = min(ys) - pad, max(ys) + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0 or 1) * pw

    def py(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0 or 1) * ph

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {W} {H}' width='{W}' height='{H}' "
             f"role='img' aria-label='{html.escape(title)}'>",
             f"<rect x='{LEFT}' y='{TOP}' width='{pw}' height='{ph}' fill='#fff' stroke='#999'/>"]
    for t in _ticks(y0, y1):
        parts.append(f"<line x1='{LEFT}' x2='{LEFT + pw}' y1='{py(t):.1f}' y2='{py(t):.1f}' stroke='#eee'/>"
                     f"<text x='{LEFT - 6}' y='{py(t) + 4:.1f}' text-anchor='end' font-size='11'>{t:.3g}</text>")
    for t in _ticks(x0, x1):
        parts.append(f"<text x='{px(t):.1f}' y='{TOP + ph + 16}' text-anchor='middle' font-size='11'>"
                     f"{_fmt_tokens(t)}</text>")
    parts.append(f"<text x='{LEFT + pw / 2}' y='{H - 8}' text-anchor='middle' font-size='12'>tokens seen</text>")
    parts.append(f"<text x='14' y='{TOP + ph / 2}' text-anchor='middle' font-size='12' "
                 f"transform='rotate(-90 14 {TOP + ph / 2})'>held-out loss (nats/token)</text>")
    for i, (arm, c) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        upper = [f"{px(x):.1f},{py(y):.1f}" for x, y in zip(c["tokens"], c["max"], strict=True)]
        lower = [f"{px(x):.1f},{py(y):.1f}" for x, y in zip(c["tokens"], c["min"], strict=True)]
        parts.append(f"<polygon class='band' points='{' '.join(upper + lower[::-1])}' fill='{colour}' "
                     f"fill-opacity='0.15' stroke='none'/>")
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(c["tokens"], c["mean"], strict=True))
        parts.append(f"<polyline class='curve' data-arm='{html.escape(arm)}' points='{line}' fill='none' "
                     f"stroke='{colour}' stroke-width='2'/>")
        for x, y in zip(c["tokens"], c["mean"], strict=True):
            parts.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='2.5' fill='{colour}'/>")
        ly = TOP + 14 + 18 * i
        parts.append(f"<line x1='{LEFT + pw + 12}' x2='{LEFT + pw + 32}' y1='{ly}' y2='{ly}' stroke='{colour}' "
                     f"stroke-width='2'/><text x='{LEFT + pw + 38}' y='{ly + 4}' font-size='12'>"
                     f"{html.escape(arm)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def curves_for(result: dict[str, Any], eval_set: str) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for arm in result["arms"]:
        runs = [r for r in result["runs"] if r["arm"] == arm["name"]]
        tokens = [p["tokens"] for p in runs[0]["curve"]]
        per_point = [[r["curve"][k]["loss"][eval_set] for r in runs] for k in range(len(tokens))]
        out[arm["name"]] = {"tokens": tokens, "mean": [sum(v) / len(v) for v in per_point],
                            "min": [min(v) for v in per_point], "max": [max(v) for v in per_point]}
    return out


def _row(cells: list[Any], head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def build_page(result: dict[str, Any]) -> str:
    p = result["preset"]
    body = [f"<h1>Thresher eval: {html.escape(' vs '.join(a['name'] for a in result['arms']))}</h1>",
            f"<p>Preset <b>{html.escape(p['name'])}</b>: {p['layers']} layers × {p['hidden']}, "
            f"{result['model']['parameters']:,} parameters, {p['budget_tokens']:,} tokens per arm and seed "
            f"(sequence {p['seq_len']}, batch {p['batch']}), seeds {', '.join(map(str, result['seeds']))}, "
            f"tokenizer {html.escape(result['tokenizer']['name'])} (vocabulary {result['tokenizer']['vocab_size']:,}), "
            f"device {html.escape(result['device'])}. Wall time {result['wall_seconds']:.0f} s.</p>"]
    for eval_set in result["eval_sets"]:
        name = eval_set["name"]
        body.append(f"<h2>Held-out loss on {html.escape(name)}</h2>")
        body.append(loss_svg(name, curves_for(result, name)))
        rows = [_row(["arm", "documents", "tokens", "epochs", "final loss (mean ± sd)", "perplexity",
                      "per seed"], head=True)]
        for arm in result["arms"]:
            s = result["summary"][name][arm["name"]]
            rows.append(_row([arm["name"], f"{arm['documents']:,}", f"{arm['tokens']:,}", f"{arm['epochs']:.2f}",
                              f"{s['mean']:.4f} ± {s['sd']:.4f}", f"{s['perplexity']:.2f}",
                              ", ".join(f"{v:.4f}" for v in s["values"])]))
        body.append("<table>" + "".join(rows) + "</table>")
        diffs = result["differences"].get(name, {})
        if diffs:
            rows = [_row(["comparison", "mean difference", "95% interval", "seeds lower", "relative"], head=True)]
            for label, d in diffs.items():
                ci = "n/a (one seed)" if d["ci95"] is None else f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                rows.append(_row([label, f"{d['mean']:+.4f}", ci, f"{d['wins']}/{d['n']}", f"{d['relative']:+.2%}"]))
            body.append("<table>" + "".join(rows) + "</table>")
            body.append(f"<p class='note'>Difference = arm − baseline per seed ({html.escape(next(iter(diffs.values()))['method'])}); "
                        "negative means the arm reaches a lower held-out loss at the same tokens.</p>")
    if result.get("tasks"):
        body.append("<h2>Multiple-choice tasks</h2>")
        rows = [_row(["task", "arm", "items", "acc", "acc_norm", "correct logprob/byte", "chance"], head=True)]
        for task, per_arm in result["tasks"].items():
            for arm, t in per_arm.items():
                rows.append(_row([task, arm, t["items"], f"{t['acc']:.3f}", f"{t['acc_norm']:.3f}",
                                  f"{t['correct_logprob_per_byte']:.4f}", f"{t['chance']:.3f}"]))
        body.append("<table>" + "".join(rows) + "</table>")
    ov = result["overlap"]
    body.append(f"<p class='note'>Evaluation sets checked disjoint from every arm: by id and by word "
                f"{ov['ngram']}-grams ({ov['eval_documents']:,} documents, {ov['eval_ngrams']:,} n-grams).</p>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f4f4f4}.note{color:#555;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Thresher eval</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")
