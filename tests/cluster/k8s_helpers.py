"""Helpers for cluster-tier tests (importable from tests under ``tests/cluster/``).

- ``wait_for(condition, timeout)``: poll a cheap condition (for things no watch covers).
- ``watch_until(list_fn, predicate, timeout, **kw)``: list + watch until an object matches;
  returns it. Use this for pods, jobs, custom resources (``CustomObjectsApi`` list functions work).
- ``watch_until_gone(list_fn, name, timeout, **kw)``: until the named object no longer exists.
- ``tool(name)``: path of ``kubectl`` / ``helm`` (the cached build, else ``PATH``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import watch

DEFAULT_VERSION = os.environ.get("THRESHER_K8S_VERSION", "1.37.2").lstrip("v")
CACHE_ROOT = Path(os.environ.get("THRESHER_K8S_CACHE", Path.home() / ".cache" / "thresher-k8s"))


class WaitTimeout(AssertionError):
    pass


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             message: str = "") -> Any:
    """Call ``condition()`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried; reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for "
                              f"{message or getattr(condition, '__name__', 'condition')}"
                              + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def _items_and_rv(result) -> tuple[list, str]:
    if isinstance(result, dict):  # CustomObjectsApi returns dicts
        return result.get("items", []), result["metadata"]["resourceVersion"]
    return result.items, result.metadata.resource_version


def watch_until(list_fn: Callable, predicate: Callable[[Any], bool], timeout: float = 60.0,
                **kwargs) -> Any:
    """List, then watch, until ``predicate(obj)`` holds for an object; return that object.

    ``list_fn`` is a list function of the kubernetes client (e.g. ``BatchV1Api.list_namespaced_job``
    with ``namespace=...``); pass ``field_selector``/``label_selector`` to narrow it.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        items, rv = _items_and_rv(list_fn(**kwargs))
        for obj in items:
            last = obj
            if predicate(obj):
                return obj
        left = deadline - time.monotonic()
        if left <= 0:
            break
        w = watch.Watch()
        try:
            for ev in w.stream(list_fn, resource_version=rv,
                               timeout_seconds=max(1, int(min(left, 30))), **kwargs):
                if ev["type"] in ("ADDED", "MODIFIED"):
                    last = ev["object"]
                    if predicate(ev["object"]):
                        return ev["object"]
                elif ev["type"] == "ERROR":
                    break
                if time.monotonic() >= deadline:
                    break
        finally:
            w.stop()
        if time.monotonic() >= deadline:
            break
    raise WaitTimeout(f"timed out after {timeout}s in watch_until({getattr(list_fn, '__name__', list_fn)}); "
                      f"last object seen:\n{last}")


def watch_until_gone(list_fn: Callable, name: str, timeout: float = 60.0, **kwargs) -> None:
    """Wait until no object called ``name`` is listed (uses a metadata.name field selector)."""
    sel = f"metadata.name={name}"
    deadline = time.monotonic() + timeout
    while True:
        items, rv = _items_and_rv(list_fn(field_selector=sel, **kwargs))
        if not items:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"{name} still exists after {timeout}s")
        w = watch.Watch()
        try:
            for ev in w.stream(list_fn, field_selector=sel, resource_version=rv,
                               timeout_seconds=max(1, int(min(left, 30))), **kwargs):
                if ev["type"] == "DELETED":
                    return
        finally:
            w.stop()


def tool(name: str, version: str = DEFAULT_VERSION) -> str:
    """Path to ``kubectl``/``helm``: the cached build (tests/cluster/setup.sh), else PATH."""
    cached = CACHE_ROOT / f"v{version}" / "bin" / name
    if cached.exists():
        return str(cached)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; run tests/cluster/setup.sh")
    return found


def condition_true(obj: Any, ctype: str) -> bool:
    """True if ``obj.status.conditions`` (client object or dict) has ``ctype`` with status True."""
    if isinstance(obj, dict):
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") == ctype and c.get("status") == "True" for c in conds)
    conds = getattr(obj.status, "conditions", None) or []
    return any(c.type == ctype and c.status == "True" for c in conds)
