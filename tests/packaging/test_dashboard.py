"""The Grafana dashboard queries only metrics and labels that the operator and workers export."""

from __future__ import annotations

import json
import re

from tests.packaging.conftest import ROOT

DASHBOARD = json.loads((ROOT / "dashboards" / "thresher.json").read_text())
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "le", "curation_job", "thresher_step"}


def exported_metrics() -> dict[str, set[str]]:
    """Series name (with _total/_bucket/... suffixes) -> label names, from the real registries."""
    from prometheus_client import REGISTRY

    import curation.metrics  # noqa: F401 - registers the worker metrics
    import curation_operator.metrics  # noqa: F401 - registers the operator metrics

    names = REGISTRY._names_to_collectors  # noqa: SLF001 - the registry's own index of series names
    return {
        name: set(getattr(c, "_labelnames", ())) for name, c in names.items() if name.startswith("thresher_")
    }


def panel_queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def test_dashboard_has_the_panels_the_issue_asks_for():
    titles = " | ".join(p["title"] for p in DASHBOARD["panels"]).lower()
    for wanted in ("by phase", "step duration", "documents kept", "documents removed", "throughput"):
        assert wanted in titles, f"no panel about {wanted!r}"
    assert DASHBOARD["uid"] and DASHBOARD["templating"]["list"][0]["type"] == "datasource"


def test_every_query_uses_exported_metrics_and_labels():
    metrics = exported_metrics()
    for title, expr in panel_queries():
        used = set(re.findall(r"\bthresher_[a-z_]+", expr))
        assert used, f"{title}: no thresher_ metric in {expr}"
        unknown = used - set(metrics)
        assert not unknown, f"{title}: {sorted(unknown)} not exported (known: {sorted(metrics)})"
        labels = set().union(*(metrics[m] for m in used)) | TARGET_LABELS
        grouped = {g.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for g in group.split(",")}
        selected = set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
        assert grouped | selected <= labels, (
            f"{title}: labels {sorted((grouped | selected) - labels)} unknown"
        )


def test_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
