"""Loading models from the models location only: offline, local files, clear errors.

A spec names a model by a path relative to the models location (a folder, or a PVC in a
cluster). Three kinds of entries are understood:

- a Hugging Face directory (`config.json` + `*.safetensors` + tokenizer files);
- a `.gguf` file, loaded through transformers (`gguf_file=`) and dequantised; the dense model
  is then cached as safetensors so that later loads take a fraction of a second;
- classifier files (`.npz` Thresher linear classifier, `.bin`/`.ftz` fastText), see classifier.py.

torch and transformers are imported lazily, inside functions: the spec, the planner and the
operator import this package's siblings without them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from curation import storage
from curation.dataset import Location
from curation.errors import MissingDependencyError, ModelNotFoundError, SpecError

log = logging.getLogger(__name__)

EXTRA_HINT = "install thresher[models] (CPU) or thresher[gpu]"
POPULATE_HINT = (
    "copy a Hugging Face model directory (config.json + *.safetensors + tokenizer files) or a .gguf "
    "file to {path}; see docs/air-gapped.md"
)
CACHE_DIR_NAME = ".thresher-cache"
CACHE_ENV = "THRESHER_MODEL_CACHE"
DEVICE_ENV = "THRESHER_DEVICE"
CPU_DTYPE_ENV = "THRESHER_CPU_DTYPE"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


# ---- lazy imports ----------------------------------------------------------------------------


def force_offline() -> None:
    """Make every Hugging Face library refuse the network, also if it was imported already."""
    os.environ.update(OFFLINE_ENV)
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:
        return
    hub_constants.HF_HUB_OFFLINE = True
    hub_constants.HF_HUB_DISABLE_TELEMETRY = True


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"the model stages need torch; {EXTRA_HINT}") from None
    return torch


def import_transformers() -> Any:
    force_offline()
    import_torch()
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(f"the model stages need transformers; {EXTRA_HINT}") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


# ---- devices -----------------------------------------------------------------------------------


def select_device(preference: str | None = None) -> str:
    """`cuda` when a GPU is visible, else `cpu`; `THRESHER_DEVICE` (or the argument) overrides."""
    torch = import_torch()
    wanted = preference or os.environ.get(DEVICE_ENV) or "auto"
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {wanted} requested ({DEVICE_ENV} or --device) but no CUDA GPU is visible")
    return wanted


def cpu_budget() -> int:
    """CPUs this process may use: affinity mask and cgroup (v2) quota, whichever is smaller."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def limit_cpu_threads(torch: Any) -> None:
    """torch sizes its thread pool by the node's cores; in a pod with a CPU limit (or next to other
    ranks) that oversubscribes, and spinning OpenMP threads then slow inference many times over.
    An explicit OMP_NUM_THREADS wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    budget = cpu_budget()
    if torch.get_num_threads() > budget:
        torch.set_num_threads(budget)


def compute_dtype(device: str) -> Any:
    """bf16 on GPUs and on CPUs with bf16 matrix units (AMX / AVX512-BF16: several times faster than
    fp32 there); fp32 on other CPUs. `THRESHER_CPU_DTYPE=float32|bfloat16` overrides on CPU."""
    torch = import_torch()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    wanted = os.environ.get(CPU_DTYPE_ENV, "auto")
    if wanted in ("float32", "bfloat16"):
        return getattr(torch, wanted)
    fast_bf16 = any(
        getattr(torch.cpu, probe, lambda: False)()
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    return torch.bfloat16 if fast_bf16 else torch.float32


# ---- locating models ---------------------------------------------------------------------------


def models_root(models: Location) -> Path:
    """The local folder models are loaded from: the models location itself, or, for an `s3://`
    location, the node-local cache that `resolve_model` fetches each model into once."""
    if storage.is_object_store(models.fs):
        return Path(storage.model_cache_root(models))
    if not isinstance(models.fs, pafs.LocalFileSystem):
        raise SpecError(f"models.path {models.path}: models must be on a local folder, a mounted PVC or s3://")
    return Path(models.path)


def resolve_model(models: Location | Path, name: str) -> Path:
    """The path of a model inside the models location; ModelNotFoundError when absent."""
    root = models if isinstance(models, Path) else models_root(models)
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not name.strip():
        raise SpecError(f"model '{name}': give a path relative to the models location ({root})")
    path = root / rel
    storage.fetch_model(root, name)  # models on an object store: a node-local copy, fetched once
    if not path.exists():
        raise ModelNotFoundError(f"model '{name}' not found at {path}: " + POPULATE_HINT.format(path=path))
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"model '{name}' at {path} has no config.json (not a Hugging Face model directory): "
            + POPULATE_HINT.format(path=path)
        )
    return path


def model_kind(path: Path) -> str:
    """`hf` (directory), `gguf`, `linear` (Thresher .npz classifier), `fasttext` or `unknown`."""
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    return {".gguf": "gguf", ".npz": "linear", ".bin": "fasttext", ".ftz": "fasttext"}.get(suffix, "unknown")


# ---- GGUF: dequantise once, cache as safetensors ----------------------------------------------


def _gguf_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def gguf_cache_candidates(root: Path, gguf: Path) -> list[Path]:
    """Where the dequantised copy of a GGUF file may live, in order of preference."""
    rel = gguf.relative_to(root) if gguf.is_relative_to(root) else Path(gguf.name)
    key = str(rel.with_suffix("")).replace("/", "__")
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thresher" / "models"
    tagged = f"{key}-{hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:8]}"
    candidates = []
    if os.environ.get(CACHE_ENV):
        candidates.append(Path(os.environ[CACHE_ENV]) / tagged)
    candidates.append(root / CACHE_DIR_NAME / key)
    candidates.append(user_cache / tagged)
    candidates.append(Path(tempfile.gettempdir()) / "thresher-model-cache" / tagged)
    return candidates


def _valid_cache(folder: Path, fingerprint: dict[str, Any]) -> bool:
    marker = folder / "thresher-source.json"
    if not marker.exists():
        return False
    try:
        return bool(json.loads(marker.read_text()) == fingerprint)
    except (OSError, ValueError):
        return False


def dequantised_gguf_dir(root: Path, gguf: Path, auto_class: str = "AutoModelForCausalLM") -> Path:
    """A safetensors directory holding the dequantised GGUF model; built on first use."""
    fingerprint = _gguf_fingerprint(gguf)
    candidates = gguf_cache_candidates(root, gguf)
    for folder in candidates:
        if _valid_cache(folder, fingerprint):
            return folder
    target = next((c for c in candidates if _writable(c)), None)
    if target is None:
        raise SpecError(f"no writable folder to cache the dequantised {gguf}; set {CACHE_ENV}")
    if target != candidates[0]:
        log.warning(
            "%s is not writable; caching the dequantised %s in %s instead",
            candidates[0].parent,
            gguf.name,
            target,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Ranks starting together on one node would each dequantise; the first builds, the others wait.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _valid_cache(target, fingerprint):
            _build_gguf_cache(gguf, target, fingerprint, auto_class)
    return target


def _build_gguf_cache(gguf: Path, target: Path, fingerprint: dict[str, Any], auto_class: str) -> None:
    transformers = import_transformers()
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    try:
        from transformers.utils.quantization_config import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantise
        pass
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            gguf.parent, **{k: kwargs[k] for k in ("gguf_file", "local_files_only")}
        )
        model = getattr(transformers, auto_class).from_pretrained(gguf.parent, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"{gguf}: not a GGUF model transformers can load ({err})".replace("\n", " ")
        ) from None
    # The dense model still carries the GGUF quantizer, which refuses to serialise.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "thresher-source.json").write_text(json.dumps(fingerprint))
        _make_readable(tmp)  # mkdtemp and safetensors create owner-only files; pods may run as others
        if target.exists() and not _valid_cache(target, fingerprint):
            shutil.rmtree(target, ignore_errors=True)  # stale: the GGUF file was replaced
        try:
            os.rename(tmp, target)
        except OSError:
            if not _valid_cache(target, fingerprint):  # else a concurrent rank finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    folder.chmod(0o755)
    for item in folder.iterdir():
        item.chmod(0o755 if item.is_dir() else 0o644)


# ---- loading (once per process) ------------------------------------------------------------


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    path: Path  # the directory the weights were read from
    name: str  # as the spec names it


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}

AUTO_CLASSES = {
    "encoder": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classifier": "AutoModelForSequenceClassification",
}


def load_model(models: Location | Path, name: str, task: str, device: str | None = None) -> LoadedModel:
    """Load (once per process) a model and its tokenizer for `task` from the models location."""
    if task not in AUTO_CLASSES:
        raise ValueError(f"unknown task {task}")
    device = select_device(device)
    root = models if isinstance(models, Path) else models_root(models)
    path = resolve_model(root, name)
    key = (str(path), task, device)
    if key in _LOADED:
        return _LOADED[key]
    transformers = import_transformers()
    kind = model_kind(path)
    if kind == "gguf":
        directory = dequantised_gguf_dir(root, path, AUTO_CLASSES[task])
    elif kind == "hf":
        directory = path
    else:
        raise SpecError(f"model '{name}' at {path}: expected a model directory or a .gguf file for {task}")
    dtype = compute_dtype(device)
    if device == "cpu":
        limit_cpu_threads(import_torch())
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(
            directory, local_files_only=True, dtype=dtype
        )
    except OSError as err:
        raise ModelNotFoundError(
            f"model '{name}' at {directory} is incomplete ({str(err).splitlines()[0]}): "
            + POPULATE_HINT.format(path=path)
        ) from None
    model.to(device).eval()
    loaded = LoadedModel(model, tokenizer, device, dtype, directory, name)
    _LOADED[key] = loaded
    return loaded


def clear_model_cache() -> None:
    """Forget loaded models (tests; a worker switching stages frees memory)."""
    _LOADED.clear()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
