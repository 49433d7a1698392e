"""A stage module as an earlier commit had it, for benchmarks that time old and new side by side."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_at(commit: str, name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
    """The file `path` as of `commit`, loaded as module `name` (`replace`: one textual substitution
    first, e.g. to point an import at another old module)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    if replace:
        source = source.replace(*replace)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def stage_at(commit: str, stage: str, helper: str) -> types.ModuleType:
    """`curation.stages.<stage>` as of `commit`, importing its own copy of `curation.stages.<helper>`
    (as `_old_<helper>`) instead of today's."""
    module_at(commit, f"_old_{helper}", f"curation/stages/{helper}.py")
    return module_at(commit, f"_old_{stage}", f"curation/stages/{stage}.py",
                 (f"from curation.stages.{helper} import", f"from _old_{helper} import"))
