"""Layering, checked on the source: `curation` never imports Kubernetes libraries, and nothing
the operator imports (transitively, function-level imports included) reaches torch.

(import-linter cannot take `curation_operator` as a root: the folder is a namespace package mapped
to another name, see operator/README.md. This test walks the same import graph itself.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"curation": ROOT / "curation", "curation_operator": ROOT / "operator"}
HEAVY = {"torch", "transformers", "faiss", "accelerate", "gguf", "sentence_transformers", "vllm"}
KUBERNETES = {"kopf", "kubernetes"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: set(imports_of(name, path)) for name, path in mods.items()}


def test_curation_never_imports_kubernetes_libraries() -> None:
    offenders = {
        name: sorted(i for i in imported if i.split(".")[0] in KUBERNETES)
        for name, imported in graph().items()
        if name.startswith("curation.")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_nothing_the_operator_imports_reaches_torch() -> None:
    g = graph()
    mods = set(g)
    start = [m for m in mods if m.startswith("curation_operator")]
    seen: dict[str, str | None] = {m: None for m in start}
    queue = list(start)
    while queue:
        current = queue.pop()
        for imported in g[current]:
            top = imported.split(".")[0]
            assert top not in HEAVY, f"{imported} is reachable from the operator via {_chain(seen, current)}"
            target = imported if imported in mods else imported.rsplit(".", 1)[0]
            if target in mods and target not in seen:
                seen[target] = current
                queue.append(target)


def _chain(seen: dict[str, str | None], node: str) -> str:
    path = [node]
    while seen.get(path[-1]):
        path.append(seen[path[-1]])  # type: ignore[arg-type]
    return " <- ".join(path)


def test_the_layering_check_sees_function_level_imports() -> None:
    g = graph()
    assert "torch" in {i.split(".")[0] for i in g["curation.models.loading"]}
    assert any(i.startswith("curation.plan") for i in g["curation_operator.builders"])
