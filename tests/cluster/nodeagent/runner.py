"""One pod = local processes, with status reported like a kubelet."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException

from .podspec import (
    DEFAULT_TERMINATION_PATH,
    LOCAL_IP,
    MAX_MESSAGE,
    expand,
    field_value,
    now,
    path_rewriter,
    phase_of,
    resource_value,
    tail_text,
)
from .volumes import VolumeBuilder

if TYPE_CHECKING:
    from .node import NodeAgent

log = logging.getLogger("thresher.node_agent")
STOP_EVENTS = ("delete", "deadline", "abort")


class _Interrupt(Exception):
    """A delete / deadline / abort event arrived while the pod was starting or running."""

    def __init__(self, event: str, value: Any):
        super().__init__(event)
        self.event, self.value = event, value


class PodRunner:
    """Runs one pod's containers as local processes and reports status like a kubelet.

    Every change arrives as an event on ``self.q`` (container exited, restart due, delete requested,
    deadline passed, abort), handled by the pod's own thread.
    """

    def __init__(self, agent: NodeAgent, pod: dict):
        self.agent, self.pod = agent, pod
        md, spec = pod["metadata"], pod["spec"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.dir = agent.data_root / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.inits: list[dict] = spec.get("initContainers") or []
        self.mains: list[dict] = spec.get("containers") or []
        self.by_name = {c["name"]: c for c in self.inits + self.mains}
        self.policy = spec.get("restartPolicy", "Always")
        self.q: queue.Queue = queue.Queue()
        self.procs: dict[str, subprocess.Popen] = {}
        self.cstate: dict[str, dict] = {}
        self.vols: dict[str, Path] = {}
        self.pending_restart: dict[str, threading.Timer] = {}
        self.start_time = now()
        self.deleting = False
        self._deleted = False
        self.finished = False
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.lock = threading.Lock()
        self._cond_since: dict[str, tuple[str, str]] = {}
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.ns}/{self.name}",
                                       daemon=True)

    # ------------------------------------------------------------------ control from the agent
    def start(self) -> None:
        self.thread.start()

    def request_delete(self, grace: int) -> None:
        self.q.put(("delete", grace))

    def abort(self) -> None:
        self.q.put(("abort", None))

    def log_path(self, cname: str, restart: int | None = None) -> Path:
        if restart is None:
            restart = self.cstate.get(cname, {}).get("restartCount", 0)
        return self.dir / "logs" / cname / f"{restart}.log"

    # ------------------------------------------------------------------ status
    def _container_status(self, c: dict) -> dict:
        st = self.cstate.get(c["name"]) or {"state": {"waiting": {"reason": "ContainerCreating"}}}
        running = "running" in st["state"]
        out = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "state": st["state"],
               "ready": running, "started": running, "restartCount": st.get("restartCount", 0)}
        if st.get("containerID"):
            out["containerID"] = st["containerID"]
        if st.get("lastState"):
            out["lastState"] = st["lastState"]
        return out

    def _cond(self, ctype: str, ok: bool, reason: str = "") -> dict:
        status = "True" if ok else "False"
        prev = self._cond_since.get(ctype)
        since = prev[1] if prev and prev[0] == status else now()
        self._cond_since[ctype] = (status, since)
        d = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
        if not ok and reason:
            d["reason"] = reason
        return d

    def _state_of(self, c: dict) -> dict:
        return (self.cstate.get(c["name"]) or {}).get("state", {})

    def _status(self) -> dict:
        terminal = self.phase in ("Succeeded", "Failed")
        all_running = bool(self.mains) and all("running" in self._state_of(c) for c in self.mains)
        initialized = terminal or all(
            self._state_of(c).get("terminated", {}).get("exitCode") == 0 for c in self.inits)
        ready = all_running and not terminal
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status = {
            "phase": self.phase, "startTime": self.start_time,
            "hostIP": LOCAL_IP, "hostIPs": [{"ip": LOCAL_IP}],
            "podIP": LOCAL_IP, "podIPs": [{"ip": LOCAL_IP}],
            "conditions": [
                self._cond("PodReadyToStartContainers", not terminal),
                self._cond("Initialized", initialized, "ContainersNotInitialized"),
                self._cond("ContainersReady", ready, not_ready),
                self._cond("Ready", ready, not_ready),
            ],
            "containerStatuses": [self._container_status(c) for c in self.mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in self.inits]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def push_status(self) -> None:
        with self.lock:
            body = {"status": self._status()}
        for attempt in range(5):
            try:
                self.agent.core.patch_namespaced_pod_status(self.name, self.ns, body)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                log.warning("status of %s/%s: %s %s", self.ns, self.name, e.status, e.body)
            except Exception as e:  # noqa: BLE001 - transient connection trouble
                log.warning("status of %s/%s: %r", self.ns, self.name, e)
            time.sleep(0.2 * (attempt + 1))

    # ------------------------------------------------------------------ containers
    def _volume_map(self, c: dict, term_file: Path) -> list[tuple[str, str]]:
        volmap = []
        for m in c.get("volumeMounts") or []:
            local = self.vols.get(m["name"])
            if local is None:
                raise RuntimeError(f"volumeMount {m['name']} names no volume")
            if m.get("subPath"):
                local = local / m["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            volmap.append((m["mountPath"], str(local)))
        volmap.append((c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH, str(term_file)))
        return volmap

    def _env(self, c: dict, volmap: list[tuple[str, str]]) -> dict[str, str]:
        """The agent's environment, the venv first on PATH, then the container's own env."""
        agent = self.agent
        refs = VolumeBuilder(agent.core, self.pod, self.dir, agent.pvc_root, agent.allocatable)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PATH"] = f"{agent.python_bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        if agent.venv:
            env["VIRTUAL_ENV"] = agent.venv
        env.update({"HOSTNAME": self.name, "KUBERNETES_SERVICE_HOST": agent.api_host,
                    "KUBERNETES_SERVICE_PORT": agent.api_port,
                    "KUBERNETES_SERVICE_PORT_HTTPS": agent.api_port,
                    "KUBERNETES_PORT": f"tcp://{agent.api_host}:{agent.api_port}"})
        own: dict[str, str] = {}
        for src in c.get("envFrom") or []:
            kind, ref = (("configmap", src["configMapRef"]) if "configMapRef" in src
                         else ("secret", src["secretRef"]))
            own.update({src.get("prefix", "") + k: v.decode(errors="replace")
                        for k, v in refs.ref_data(kind, ref).items()})
        for e in c.get("env") or []:
            own[e["name"]] = (self._value_from(c, e, refs) if "valueFrom" in e
                              else expand(e.get("value", ""), own))
        rewrite = path_rewriter(volmap)
        own = {k: rewrite(v) for k, v in own.items()}
        if "PATH" in own:
            own["PATH"] = f"{agent.python_bin}{os.pathsep}{own['PATH']}"
        env.update(own)
        return env

    def _value_from(self, c: dict, e: dict, refs: VolumeBuilder) -> str:
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            return field_value(self.pod, vf["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in vf:
            return resource_value(c, vf["resourceFieldRef"], self.agent.allocatable)
        for key, kind in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
            if key in vf:
                ref = vf[key]
                data = refs.ref_data(kind, ref)
                if ref["key"] not in data and not ref.get("optional"):
                    raise RuntimeError(f"{kind} {ref.get('name')} has no key {ref['key']}")
                return data.get(ref["key"], b"").decode(errors="replace")
        raise RuntimeError(f"unsupported valueFrom in env {e['name']}")

    def _argv(self, c: dict, env: dict[str, str], volmap: list[tuple[str, str]]) -> list[str]:
        rewrite = path_rewriter(volmap)
        argv = [rewrite(expand(a, env)) for a in (c.get("command") or [])]
        if not argv:
            if not self.agent.default_command:
                raise RuntimeError("container has no command and the test node agent pulls no "
                                   "images (start the agent with --default-command)")
            argv = list(self.agent.default_command)
        argv += [rewrite(expand(a, env)) for a in (c.get("args") or [])]
        if "/" not in argv[0] or not Path(argv[0]).exists():  # e.g. /opt/venv/bin/thresher
            found = shutil.which(Path(argv[0]).name, path=env["PATH"])
            if not found:
                raise RuntimeError(f"executable {argv[0]!r} not found on PATH {env['PATH']}")
            argv[0] = found
        return argv

    def _spawn(self, c: dict) -> None:
        cname = c["name"]
        st = self.cstate.setdefault(cname, {"restartCount": 0})
        cdir = self.dir / "containers" / cname
        cdir.mkdir(parents=True, exist_ok=True)
        term_file = cdir / "termination-log"
        term_file.write_bytes(b"")
        volmap = self._volume_map(c, term_file)
        env = self._env(c, volmap)
        argv = self._argv(c, env, volmap)
        cwd = cdir
        if c.get("workingDir"):
            wd = Path(path_rewriter(volmap)(c["workingDir"]))
            if wd.is_dir() or any(str(wd).startswith(h) for _, h in volmap):
                wd.mkdir(parents=True, exist_ok=True)
                cwd = wd
        logp = self.log_path(cname, st["restartCount"])
        logp.parent.mkdir(parents=True, exist_ok=True)
        with open(logp, "ab") as lf:
            p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=lf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started %s/%s[%s] pid %d: %s", self.ns, self.name, cname, p.pid, shlex.join(argv))
        self.procs[cname] = p
        with self.lock:
            st["state"] = {"running": {"startedAt": now()}}
            st["containerID"] = f"thresher://{self.uid}/{cname}/{p.pid}"
        threading.Thread(target=lambda: self.q.put(("exited", (cname, p, p.wait()))),
                         daemon=True).start()

    def _record_exit(self, cname: str, rc: int) -> int:
        c, st = self.by_name[cname], self.cstate[cname]
        try:
            with open(self.dir / "containers" / cname / "termination-log", "rb") as f:
                msg = f.read(MAX_MESSAGE).decode(errors="replace")
        except FileNotFoundError:
            msg = ""
        code = rc if rc >= 0 else 128 - rc  # killed by signal N -> 128 + N
        if not msg and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            msg = tail_text(self.log_path(cname))
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": st["state"].get("running", {}).get("startedAt", now()),
                "finishedAt": now(), "containerID": st.get("containerID")}
        if rc < 0:
            term["signal"] = -rc
        if msg:
            term["message"] = msg
        with self.lock:
            st["state"] = {"terminated": term}
        return code

    def _kill(self, sig: int) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)

    def _set_waiting(self, cname: str, reason: str, message: str) -> None:
        with self.lock:
            st = self.cstate.setdefault(cname, {"restartCount": 0})
            st["state"] = {"waiting": {"reason": reason, "message": message}}

    def _bump_restart(self, cname: str) -> None:
        with self.lock:
            st = self.cstate[cname]
            st["lastState"] = st["state"]
            st["restartCount"] = st.get("restartCount", 0) + 1

    def _restart_delay(self, cname: str) -> float:
        n = self.cstate[cname]["restartCount"]
        return min(self.agent.backoff * (2 ** n), self.agent.max_backoff)

    # ------------------------------------------------------------------ events
    def _next_event(self, timeout: float | None = None) -> tuple[str, Any]:
        """Next event; raises ``_Interrupt`` for delete/deadline/abort, queue.Empty on timeout."""
        ev, val = self.q.get(timeout=timeout)
        if ev in STOP_EVENTS:
            raise _Interrupt(ev, val)
        return ev, val

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self._next_event(left)
            except queue.Empty:
                return

    # ------------------------------------------------------------------ lifecycle
    def _run(self) -> None:
        try:
            self._lifecycle()
        except Exception:
            log.exception("pod %s/%s: runner crashed", self.ns, self.name)
            self._kill(signal.SIGKILL)
        finally:
            self.finished = True
            log.info("pod %s/%s done: %s", self.ns, self.name, self.phase)
            # a delete that arrived while the final status was being written
            if self.deleting and not self._deleted and self.phase in ("Succeeded", "Failed"):
                self.agent.final_delete(self.ns, self.name, self.uid)

    def _lifecycle(self) -> None:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline:
            timer = threading.Timer(deadline, lambda: self.q.put(("deadline", None)))
            timer.daemon = True
            timer.start()
        try:
            self._setup_volumes()
            for c in self.inits:
                if not self._run_init(c):
                    return self._finish()
            self._run_mains()
        except _Interrupt as i:
            if i.event == "abort":
                self._kill(signal.SIGKILL)
                return None
            self._terminate(i.event, i.value)
        return None

    def _setup_volumes(self) -> None:
        """Retried like a kubelet until it works or the pod is deleted."""
        while True:
            try:
                self.vols = VolumeBuilder(self.agent.core, self.pod, self.dir, self.agent.pvc_root,
                                          self.agent.allocatable).build()
                if self.message:
                    self.message = None
                return
            except Exception as e:  # noqa: BLE001
                self.message = f"volume setup failed: {e}"
                self.push_status()
                self._sleep(2.0)

    def _start_container(self, c: dict) -> None:
        while True:
            try:
                self._spawn(c)
                return
            except Exception as e:  # noqa: BLE001 - reported as CreateContainerError
                log.warning("pod %s/%s[%s]: %s", self.ns, self.name, c["name"], e)
                self._set_waiting(c["name"], "CreateContainerError", str(e))
                self.push_status()
                self._sleep(2.0)

    def _run_init(self, c: dict) -> bool:
        """Run one init container to success (restarting per policy); False if the pod failed."""
        while True:
            self._start_container(c)
            self.push_status()
            while True:
                ev, (cname, p, rc) = self._next_event()
                if ev == "exited" and self.procs.get(cname) is p:
                    break
            if self._record_exit(cname, rc) == 0:
                return True
            if self.policy == "Never":
                self.phase = "Failed"
                return False
            self._bump_restart(cname)
            self._sleep(self._restart_delay(cname))

    def _run_mains(self) -> None:
        for c in self.mains:
            self._start_container(c)
        self.phase = "Running"
        self.push_status()
        while True:
            ev, val = self._next_event()
            if ev == "exited":
                cname, p, rc = val
                if self.procs.get(cname) is not p:
                    continue
                code = self._record_exit(cname, rc)
                if self.policy == "Always" or (self.policy == "OnFailure" and code != 0):
                    t = threading.Timer(self._restart_delay(cname),
                                        lambda n=cname: self.q.put(("restart", n)))
                    t.daemon = True
                    self.pending_restart[cname] = t
                    t.start()
                elif not self.pending_restart and all(p.poll() is not None
                                                      for p in self.procs.values()):
                    self.phase = phase_of([self._state_of(c)["terminated"]["exitCode"]
                                           for c in self.mains])
                    return self._finish()
                self.push_status()
            elif ev == "restart":
                self.pending_restart.pop(val, None)
                self._bump_restart(val)
                try:
                    self._spawn(self.by_name[val])
                except Exception as e:  # noqa: BLE001
                    self._set_waiting(val, "CreateContainerError", str(e))
                self.push_status()

    def _terminate(self, event: str, value: Any) -> None:
        """SIGTERM, wait for the grace period, SIGKILL; final status; delete if requested."""
        for t in self.pending_restart.values():
            t.cancel()
        self.pending_restart.clear()
        if event == "deadline":
            self.reason = "DeadlineExceeded"
            self.message = "Pod was active on the node longer than the specified deadline"
            tgp = self.pod["spec"].get("terminationGracePeriodSeconds")
            grace = 30 if tgp is None else tgp
        else:
            self.deleting = True
            grace = value
        self._kill(signal.SIGTERM)
        kill_at = time.monotonic() + max(grace, 0)
        running = {n for n, p in self.procs.items() if p.poll() is None}
        while running:
            left = kill_at - time.monotonic()
            if left <= 0:
                self._kill(signal.SIGKILL)
                left = 5.0
            try:
                ev, val = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if ev == "exited" and self.procs.get(val[0]) is val[1]:
                self._record_exit(val[0], val[2])
                running.discard(val[0])
            elif ev == "abort":
                self._kill(signal.SIGKILL)
                return
            elif ev == "delete":
                self.deleting = True
                kill_at = min(kill_at, time.monotonic() + max(val, 0))
        with self.lock:
            for c in self.inits + self.mains:
                st = self.cstate.setdefault(c["name"], {"restartCount": 0})
                if "terminated" not in st.get("state", {}):
                    st["state"] = {"terminated": {
                        "exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": now(),
                        "message": "The container could not be located when the pod was terminated"}}
        self.phase = phase_of([self._state_of(c)["terminated"]["exitCode"] for c in self.mains])
        self._finish()

    def _finish(self) -> None:
        """The pod is terminal: report it, and if deletion was requested, complete it (grace 0)."""
        self.push_status()
        if self.deleting:
            self._deleted = True
            self.agent.final_delete(self.ns, self.name, self.uid)
