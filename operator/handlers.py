"""kopf handlers: thin wrappers that call the reconciler.

A CurationJob is reconciled when it is created, resumed (operator start), its spec changes, one
of its Jobs or pods changes, and periodically by a timer, which is what makes the operator
converge even when an event was missed (e.g. while the API server restarted).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from curation.crd import PLURAL
from curation.spec import API_GROUP, API_VERSION, KIND
from curation_operator import metrics
from curation_operator.builders import LABEL_MANAGED_BY, MANAGED_BY
from curation_operator.kube import Kube, load_client
from curation_operator.reconcile import InvalidSpec, Reconciler
from curation_operator.settings import OperatorSettings
from curation_operator.state import TERMINAL

log = logging.getLogger("thresher.operator")
CJ = {"group": API_GROUP, "version": API_VERSION, "plural": PLURAL}
SETTINGS = OperatorSettings()  # the timer interval is needed when the handlers are registered
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping lives in our own annotations; no finalizers (deletion needs no handler:
    # owner references remove Jobs and pods), no CRD scanning (fewer API rights).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING  # our own events carry the story
    settings.posting.reporting_component = "thresher-operator"
    # Re-establish watches quickly after an API server restart.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.execution.max_workers = 8
    # kopf holds its finalizer until the timer of a deleted CurationJob has exited; a reconcile
    # in flight takes well under a second, so do not let `kubectl delete` wait kopf's default 60 s.
    settings.background.instant_exit_timeout = 5.0
    settings.background.cancellation_polling = 2.0
    memo.reconciler = Reconciler(Kube(load_client()), SETTINGS)
    metrics.serve(SETTINGS.metrics_port)
    log.info(
        "thresher operator started: worker image %s, namespaces %s",
        SETTINGS.worker_image,
        SETTINGS.namespaces or "all",
    )


def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        memo.reconciler.reconcile(namespace, name)
    except InvalidSpec as err:
        raise kopf.PermanentError(str(err)) from None


@kopf.on.resume(**CJ)
@kopf.on.create(**CJ)
@kopf.on.update(**CJ, field="spec")
def on_curation_job(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Parse first: an invalid spec becomes a Failed condition, a Warning event and a permanent error."""
    _reconcile(memo, namespace, name)


def _not_finished(status: dict[str, Any], **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


@kopf.timer(**CJ, interval=SETTINGS.reconcile_interval, when=_not_finished)
def periodic(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        memo.reconciler.reconcile(namespace, name)
    except InvalidSpec:
        pass  # already reported as a Failed condition and an event
    except Exception as err:  # noqa: BLE001 - counted in metrics; the next tick retries
        log.warning("reconcile of %s/%s failed: %s", namespace, name, err)


@kopf.on.event(**CJ)
def on_curation_job_event(type: str | None, uid: str, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.reconciler.forget(uid)


def _parent(body: Any) -> str | None:
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if (
            owner.get("controller")
            and owner.get("kind") == KIND
            and owner.get("apiVersion", "").startswith(API_GROUP)
        ):
            return str(owner["name"])
    return None


def _poke_parent(namespace: str, parent: str | None, memo: kopf.Memo) -> None:
    if parent is None:
        return
    try:
        memo.reconciler.reconcile(namespace, parent)
    except InvalidSpec:
        pass
    except Exception as err:  # noqa: BLE001 - the timer retries
        log.warning("reconcile of %s/%s after a child event failed: %s", namespace, parent, err)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
def on_step_job(type: str | None, body: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """A step Job changed (a rank finished, the Job completed or failed): advance its CurationJob."""
    if type is None:  # the initial listing; `resume` handles existing CurationJobs
        return
    _poke_parent(namespace, _parent(body), memo)


def _pod_needs_attention(status: dict[str, Any], **_: Any) -> bool:
    scheduled = {c.get("type"): c for c in status.get("conditions") or []}.get("PodScheduled", {})
    return scheduled.get("reason") == "Unschedulable" or any(
        (cs.get("state") or {}).get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
        for cs in status.get("containerStatuses") or []
    )


@kopf.on.event("", "v1", "pods", labels=OWNED, when=_pod_needs_attention)
def on_stuck_pod(type: str | None, labels: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Report unschedulable or unstartable pods at once rather than at the next timer tick."""
    if type is None:
        return
    from curation_operator.builders import LABEL_JOB

    _poke_parent(namespace, labels.get(LABEL_JOB), memo)
