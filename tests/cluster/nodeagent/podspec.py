"""Pure helpers that interpret a pod spec the way the kubelet does (no API calls)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from pathlib import Path

from kubernetes.utils import parse_quantity

MAX_MESSAGE = 4096  # bytes of the termination message file the kubelet reads
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # FallbackToLogsOnError: tail of the log
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
LOCAL_IP = "127.0.0.1"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay literal."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR.sub(sub, s)


def path_rewriter(mapping: list[tuple[str, str]]) -> Callable[[str], str]:
    """Return ``f(str)`` that replaces each container path prefix by its local folder.

    A prefix matches only at a path boundary: not preceded by a path character (``file://`` is ok)
    and followed by ``/``, the end, or a non-path character. Longer paths win.
    """
    pairs = sorted(((c.rstrip("/") or "/", h) for c, h in mapping if c), key=lambda x: -len(x[0]))
    if not pairs:
        return lambda s: s
    alts = "|".join(re.escape(c) for c, _ in pairs)
    rx = re.compile(r"(?:(?<![\w./-])|(?<=://))(" + alts + r")(?=/|$|[^\w.-])")
    table = dict(pairs)
    return lambda s: rx.sub(lambda m: table[m.group(1)], s)


def field_value(pod: dict, path: str) -> str:
    """Value of a downward-API ``fieldRef.fieldPath``."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        d = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": LOCAL_IP, "status.hostIPs": LOCAL_IP,
        "status.podIP": LOCAL_IP, "status.podIPs": LOCAL_IP,
    }
    if path in simple:
        return simple[path]
    raise ValueError(f"unsupported fieldRef {path!r}")


def resource_value(container: dict, ref: dict, node_alloc: dict) -> str:
    """Value of a ``resourceFieldRef`` (limits fall back to node allocatable, like the kubelet)."""
    kind, _, name = ref.get("resource", "").partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = node_alloc.get(name, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(raw) / divisor))


def tail_text(path: Path, lines: int = FALLBACK_LINES, limit: int = FALLBACK_BYTES) -> str:
    """Last ``lines`` lines of a file, at most ``limit`` bytes."""
    try:
        data = path.read_bytes()[-64 * 1024:]
    except FileNotFoundError:
        return ""
    text = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])[-limit:]
    return text.decode(errors="replace")


def phase_of(exit_codes: list[int]) -> str:
    """Terminal pod phase once every regular container has exited."""
    return "Succeeded" if exit_codes and all(c == 0 for c in exit_codes) else "Failed"
