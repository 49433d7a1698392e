"""The test node agent: kubelet-like pod lifecycle as local processes (local cluster only)."""

from __future__ import annotations

import textwrap
import time

import pytest
from k8s_helpers import wait_for, watch_until, watch_until_gone
from kubernetes import client
from nodeagent.podspec import expand, path_rewriter

pytestmark = pytest.mark.cluster


@pytest.fixture
def local_only(k8s_cluster):
    if not k8s_cluster.local:
        pytest.skip("checks the local node agent")
    return k8s_cluster


def test_path_rewriting_and_expansion():
    rw = path_rewriter([("/data", "/tmp/x/pvc"), ("/data/in", "/tmp/y"), ("/dev/termination-log", "/t/log")])
    assert rw("/data/in/a.parquet") == "/tmp/y/a.parquet"
    assert rw("--out=/data/out") == "--out=/tmp/x/pvc/out"
    assert rw("file:///data") == "file:///tmp/x/pvc"
    assert rw("/database") == "/database"
    assert rw("/srv/data/in") == "/srv/data/in"
    assert rw("/dev/termination-log") == "/t/log"
    assert rw("a:/data,b:/data/in/") == "a:/tmp/x/pvc,b:/tmp/y/"
    assert expand("$(A)-$(B)-$$(A)-$(MISSING)", {"A": "1", "B": "2"}) == "1-2-$(A)-$(MISSING)"


def _pod(name: str, script: str, **extra) -> dict:
    spec = {"restartPolicy": "Never", "containers": [{
        "name": "main", "image": "python:3.12-slim",
        "command": ["python", "-c", textwrap.dedent(script)], **extra.pop("container", {})}]}
    spec.update(extra)
    return {"metadata": {"name": name}, "spec": spec}


def _phase_is(*phases):
    return lambda p: p.status.phase in phases


def test_env_volumes_and_termination_message(local_only, k8s_api, namespace, pvc_folder, kubectl):
    core = client.CoreV1Api(k8s_api)
    inbox = pvc_folder(namespace, "data")
    (inbox / "in.txt").write_text("hello from the test")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"},
                                                  "data": {"mode": "fast", "settings.ini": "x=1\n"}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    script = """
        import os, pathlib, sys
        src, dst, cfg = (pathlib.Path(a) for a in sys.argv[1:4])
        text = src.read_text()
        (dst / "out.txt").write_text(text.upper())
        scratch = pathlib.Path(os.environ["SCRATCH"]); (scratch / "tmp").write_text("x")
        print("mode", os.environ["MODE"], "ns", os.environ["NS"], "greeting", os.environ["GREETING"])
        print("settings", cfg.read_text().strip())
        pathlib.Path(os.environ["TLOG"]).write_text("done:" + text)
    """
    core.create_namespaced_pod(namespace, _pod("io", script, container={
        "args": ["/mnt/data/in.txt", "/mnt/data", "/etc/cfg/settings.ini"],
        "terminationMessagePath": "/tmp/msg",
        "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "WHO", "value": "world"},
            {"name": "GREETING", "value": "hello-$(WHO)"},
            {"name": "SCRATCH", "value": "/scratch"},
            {"name": "TLOG", "value": "/tmp/msg"},
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"},
                         {"name": "scratch", "mountPath": "/scratch"},
                         {"name": "cfg", "mountPath": "/etc/cfg"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                 {"name": "scratch", "emptyDir": {}},
                 {"name": "cfg", "configMap": {"name": "cfg"}}]))
    pod = watch_until(core.list_namespaced_pod, _phase_is("Succeeded", "Failed"), timeout=60,
                      namespace=namespace, field_selector="metadata.name=io")
    logs = kubectl("logs", "-n", namespace, "io")  # API server -> node agent's log endpoint
    assert pod.status.phase == "Succeeded", logs
    assert (inbox / "out.txt").read_text() == "HELLO FROM THE TEST"
    assert f"mode fast ns {namespace} greeting hello-world" in logs
    assert "settings x=1" in logs
    term = pod.status.container_statuses[0].state.terminated
    assert term.message == "done:hello from the test"
    assert pod.status.start_time and term.finished_at and pod.status.pod_ip == "127.0.0.1"
    # the PVC was bound by the agent's provisioner to a hostPath PV on the same folder
    pvc = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.status.phase == "Bound"
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.host_path.path == str(inbox)


def test_delete_sends_sigterm_and_honours_grace(local_only, k8s_api, namespace, pvc_folder):
    core = client.CoreV1Api(k8s_api)
    out = pvc_folder(namespace, "out")
    script = """
        import pathlib, signal, sys, time
        out = pathlib.Path(sys.argv[1])
        def bye(*_):
            (out / "term.txt").write_text("got SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        (out / "ready").write_text("1")
        time.sleep(600)
    """
    core.create_namespaced_pod(namespace, _pod("graceful", script, container={
        "args": ["/out"], "volumeMounts": [{"name": "out", "mountPath": "/out"}]},
        volumes=[{"name": "out", "hostPath": {"path": str(out)}}]))
    watch_until(core.list_namespaced_pod, _phase_is("Running"), timeout=60, namespace=namespace,
                field_selector="metadata.name=graceful")
    wait_for(lambda: (out / "ready").exists(), timeout=30, message="handler installed")
    t0 = time.monotonic()
    core.delete_namespaced_pod("graceful", namespace, grace_period_seconds=30)
    watch_until_gone(core.list_namespaced_pod, "graceful", timeout=30, namespace=namespace)
    assert time.monotonic() - t0 < 10, "exited on SIGTERM, no need to wait for the grace period"
    assert (out / "term.txt").read_text() == "got SIGTERM"

    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(600)
    """
    core.create_namespaced_pod(namespace, _pod("stubborn", stubborn))
    watch_until(core.list_namespaced_pod, _phase_is("Running"), timeout=60, namespace=namespace,
                field_selector="metadata.name=stubborn")
    wait_for(lambda: "ignoring" in core.read_namespaced_pod_log("stubborn", namespace), timeout=30)
    t0 = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=2)
    watch_until_gone(core.list_namespaced_pod, "stubborn", timeout=30, namespace=namespace)
    assert time.monotonic() - t0 >= 1.5, "SIGKILL only after the grace period"


def test_on_failure_restarts_in_place(local_only, k8s_api, namespace):
    core = client.CoreV1Api(k8s_api)
    script = """
        import os, pathlib, sys
        marker = pathlib.Path(os.environ["STATE"]) / "attempt"
        if not marker.exists():
            marker.write_text("1")
            sys.exit(3)
    """
    core.create_namespaced_pod(namespace, _pod("flaky", script, restartPolicy="OnFailure", container={
        "env": [{"name": "STATE", "value": "/state"}],
        "volumeMounts": [{"name": "state", "mountPath": "/state"}]},
        volumes=[{"name": "state", "emptyDir": {}}]))
    pod = watch_until(core.list_namespaced_pod, _phase_is("Succeeded", "Failed"), timeout=60,
                      namespace=namespace, field_selector="metadata.name=flaky")
    st = pod.status.container_statuses[0]
    assert pod.status.phase == "Succeeded"
    assert st.restart_count == 1
    assert st.last_state.terminated.exit_code == 3


def test_init_container_then_main(local_only, k8s_api, namespace, pvc_folder):
    core = client.CoreV1Api(k8s_api)
    folder = pvc_folder(namespace, "shared")
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "init"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "prep", "image": "x", "command": [
                "python", "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('prepared')",
                "/w/prep.txt"], "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
            "containers": [{"name": "main", "image": "x", "command": [
                "python", "-c", "import sys, pathlib; p = pathlib.Path(sys.argv[1]); "
                "p.with_name('main.txt').write_text(p.read_text() + '+main')", "/w/prep.txt"],
                "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
            "volumes": [{"name": "w", "hostPath": {"path": str(folder)}}],
        },
    })
    pod = watch_until(core.list_namespaced_pod, _phase_is("Succeeded", "Failed"), timeout=60,
                      namespace=namespace, field_selector="metadata.name=init")
    assert pod.status.phase == "Succeeded"
    assert (folder / "main.txt").read_text() == "prepared+main"
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0


def test_second_node_agent_runs_pods_that_target_it(local_only, k8s_api, namespace):
    """Extra agents (thresher-node-1..3) join with their own node identity; stopping one is a
    way to simulate losing a node."""
    core = client.CoreV1Api(k8s_api)
    cp = local_only.control_plane
    proc = cp.start_agent(["--gpus=2", "--label=thresher.dev/pool=second",
                           "--taint=thresher.dev/pool=second:NoSchedule"], node_name="thresher-node-1")
    try:
        watch_until(core.list_node, lambda n: any(c.type == "Ready" and c.status == "True"
                                                  for c in n.status.conditions or []),
                    timeout=60, field_selector="metadata.name=thresher-node-1")
        core.create_namespaced_pod(namespace, _pod(
            "pinned", "import os; print(os.environ['NODE'])",
            nodeSelector={"thresher.dev/pool": "second"},
            tolerations=[{"key": "thresher.dev/pool", "operator": "Equal", "value": "second",
                          "effect": "NoSchedule"}],
            container={"env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}))
        pod = watch_until(core.list_namespaced_pod, _phase_is("Succeeded", "Failed"), timeout=60,
                          namespace=namespace, field_selector="metadata.name=pinned")
        assert pod.status.phase == "Succeeded"
        assert pod.spec.node_name == "thresher-node-1"
        assert core.read_namespaced_pod_log("pinned", namespace).strip() == "thresher-node-1"
    finally:
        cp.stop_process(proc)
        core.delete_node("thresher-node-1")


def test_api_server_restart_is_survived_by_the_agent(local_only, k8s_api, namespace):
    """The agent's watch reconnects after the API server crashes and comes back."""
    core = client.CoreV1Api(k8s_api)
    local_only.control_plane.restart_process("kube-apiserver")
    core.create_namespaced_pod(namespace, _pod("after-restart", "print('ok')"))
    pod = watch_until(core.list_namespaced_pod, _phase_is("Succeeded", "Failed"), timeout=60,
                      namespace=namespace, field_selector="metadata.name=after-restart")
    assert pod.status.phase == "Succeeded"
