"""One reconcile of one CurationJob: read the world, decide, act, write status, emit events.

Everything is read back from the API server on every pass (never from memory), so a restarted
operator continues where the previous one stopped and adopts the Jobs it finds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from curation.errors import SpecError
from curation.plan import Step, plan_steps
from curation.spec import PipelineSpec, parse_spec
from curation_operator import metrics
from curation_operator.builders import (
    CurationJobRef,
    build_spec_configmap,
    build_step_job,
    check_cluster_spec,
)
from curation_operator.events import Event, events_for
from curation_operator.kube import Kube, now_rfc3339
from curation_operator.observe import PodView, belongs_to, job_view, pod_view
from curation_operator.settings import OperatorSettings
from curation_operator.state import (
    AFTER_STATUS,
    Action,
    ActionKind,
    World,
    decide,
    invalid_spec_status,
    needs_restart,
    steps_to_observe,
)

log = logging.getLogger("thresher.operator")


class InvalidSpec(Exception):
    """The API server accepted the CurationJob but the pipeline model refuses it (permanent)."""


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning `old` into `new` (removed keys become null)."""
    patch: dict[str, Any] = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value:
            patch[key] = value
    return patch


class Reconciler:
    def __init__(
        self, kube: Kube, settings: OperatorSettings, clock: Callable[[], str] = now_rfc3339
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def reconcile(self, namespace: str, name: str) -> str | None:
        """Bring one CurationJob one step closer to done; returns its phase (None if it is gone).

        Handlers for the CurationJob, its Jobs and the timer all call this; a lock per job keeps
        them from interleaving (the lock guards a pass, it holds no state)."""
        started = time.monotonic()
        with self._lock(namespace, name):
            try:
                return self._reconcile(namespace, name)
            except InvalidSpec:
                raise
            except ApiException:
                metrics.RECONCILE_ERRORS.labels("api").inc()
                raise
            except OSError:
                metrics.RECONCILE_ERRORS.labels("connection").inc()
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels("internal").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def forget(self, uid: str) -> None:
        metrics.set_phase(uid, None)

    # ------------------------------------------------------------------ one pass
    def _reconcile(self, namespace: str, name: str) -> str | None:
        cj = self.kube.get_curation_job(namespace, name)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return None  # owned Jobs and pods go with it (owner references)
        meta = cj["metadata"]
        generation = int(meta.get("generation") or 1)
        stored: dict[str, Any] = cj.get("status") or {}
        previous = {} if needs_restart(stored, generation) else stored
        ref = CurationJobRef(name=name, namespace=namespace, uid=meta["uid"])
        now = self.clock()
        try:
            spec = parse_spec(cj, source=f"CurationJob {namespace}/{name}")
            steps = plan_steps(spec)
            check_cluster_spec(spec)
            configmap = build_spec_configmap(ref, spec)  # also checks that paths stay inside their PVCs
        except SpecError as err:
            status = invalid_spec_status(previous, generation, err.message, now)
            self._write(cj, stored, status, [], {})
            raise InvalidSpec(err.message) from None
        world = self._observe(ref, spec, steps, generation, previous)
        decision = decide(world, now)
        if any(a.kind == ActionKind.CREATE_JOB for a in decision.actions):
            self._prepare(ref, spec, configmap)
        before = [a for a in decision.actions if a.kind not in AFTER_STATUS]
        self._act(ref, spec, steps, before)
        stage_types = {s.stage: s.stage_type for s in steps}
        self._write(cj, stored, decision.status, before, stage_types)
        # only now that the status holds their steps' results may the Jobs (and pods) go
        self._act(ref, spec, steps, [a for a in decision.actions if a.kind in AFTER_STATUS])
        return str(decision.status["phase"])

    def _observe(
        self,
        ref: CurationJobRef,
        spec: PipelineSpec,
        steps: list[Step],
        generation: int,
        previous: dict[str, Any],
    ) -> World:
        """The owned Jobs, and the pods of only the steps whose results are not recorded yet."""
        jobs = [job_view(j) for j in self.kube.list_jobs(ref.namespace, ref.name)]
        owned = {j.step_id: j for j in jobs if j.owner_uid == ref.uid}
        pods: dict[str, list[PodView]] = {}
        for step in steps_to_observe(steps, owned, previous):
            views = [pod_view(raw) for raw in self.kube.list_pods(ref.namespace, ref.name, step.id)]
            pods[step.id] = [v for v in views if belongs_to(v, owned[step.id])]
        return World(ref.name, generation, spec, steps, owned, pods, previous)

    def _prepare(self, ref: CurationJobRef, spec: PipelineSpec, configmap: dict[str, Any]) -> None:
        """What a step pod needs before its Job exists: the spec file and the worker's identity."""
        self.kube.ensure_configmap(configmap)
        if not spec.pod.service_account_name and self.settings.worker_service_account:
            self.kube.ensure_service_account(ref.namespace, self.settings.worker_service_account)

    def _act(self, ref: CurationJobRef, spec: PipelineSpec, steps: list[Step], actions: list[Action]) -> None:
        positions = {s.id: i for i, s in enumerate(steps)}
        for action in actions:
            if action.kind == ActionKind.CREATE_JOB:
                step = steps[positions[action.step_id]]
                body = build_step_job(ref, spec, step, positions[action.step_id], self.settings)
                job, created = self.kube.create_job(body)
                if created:
                    metrics.STEP_JOBS.labels(step.stage_type).inc()
                    log.info("created Job %s/%s for step %s", ref.namespace, action.job, step.id)
                else:
                    log.info("adopted existing Job %s/%s for step %s", ref.namespace, action.job, step.id)
            elif action.kind == ActionKind.SUSPEND_JOB:
                self.kube.patch_job(ref.namespace, action.job, {"suspend": True})
            elif action.kind == ActionKind.RESUME_JOB:
                self.kube.patch_job(ref.namespace, action.job, {"suspend": False})
            elif action.kind == ActionKind.EXPIRE_JOB:
                ttl = self.settings.finished_job_ttl_seconds
                self.kube.patch_job(ref.namespace, action.job, {"ttlSecondsAfterFinished": ttl})
            elif action.kind == ActionKind.DELETE_JOB:
                self.kube.delete_job(ref.namespace, action.job)
                log.info("deleted Job %s/%s of step %s", ref.namespace, action.job, action.step_id)

    def _write(
        self,
        cj: dict[str, Any],
        stored: dict[str, Any],
        status: dict[str, Any],
        actions: list[Action],
        stage_types: dict[str, str],
    ) -> None:
        meta = cj["metadata"]
        patch = merge_patch(stored, status)
        if patch:
            self.kube.patch_status(meta["namespace"], meta["name"], patch)
        metrics.set_phase(meta["uid"], status.get("phase"))
        metrics.record_transition(stored, status, stage_types)
        for event in events_for(stored, status, actions):
            self._post(cj, event)

    def _post(self, cj: dict[str, Any], event: Event) -> None:
        try:
            self.kube.post_event(cj, event)
        except ApiException as err:  # an event is best effort; the status already says it
            log.warning("could not post event %s: %s", event.reason, err.reason)
