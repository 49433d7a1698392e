"""Issue 10, items 10 and 11: two runs on one output are locked out (a dead run's lock is not), and
killing the runner does not leave its pool workers running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.adversarial.support import assert_one_clear_line, start_thresher, thresher, write_input, write_spec

pytestmark = pytest.mark.adversarial


def started_run(spec: Path, out: Path, *args: str) -> subprocess.Popen[str] | None:
    """A `thresher run` caught (and stopped) while it owns `out`: after it claimed the folder."""
    run = start_thresher("run", "--quiet", *args, str(spec), "--output", str(out))
    while run.poll() is None:
        if (out / "_work" / "spec.json").exists():
            run.send_signal(signal.SIGSTOP)
            return run
        time.sleep(0.002)
    run.communicate()
    return None  # it finished before it could be caught


def test_item10_a_second_run_on_the_same_output_is_refused_and_workers_are_not(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", files=4, rows=200)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "unused")
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        first = started_run(spec, out, "--workers", "1")
        if first is not None:
            break
    else:
        pytest.skip("the first run always finished before a second could start")
    try:
        second = thresher("run", "--quiet", str(spec), "--output", str(out))
        assert_one_clear_line(second, 4, f"another run (pid {first.pid} on {socket.gethostname()}) is using "
                                         f"this output ({out}); wait for it to finish or choose another output")
        worker = thresher("worker", "--spec", str(spec), "--output", str(out), "--step", "ingest.read",
                          "--rank", "0", "--termination-log", str(tmp_path / "term"))
        assert worker.code == 0, worker.err  # cluster pods share one output on purpose: never locked out
    finally:
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert "800 documents in" in stdout


def test_item10_the_lock_of_a_killed_run_does_not_block_the_rerun(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", files=4, rows=200)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "unused")
    out = tmp_path / "out"
    first = started_run(spec, out, "--workers", "1")
    if first is None:
        pytest.skip("the first run finished before it could be killed")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    rerun = thresher("run", "--quiet", str(spec), "--output", str(out))
    assert rerun.code == 0, rerun.err
    assert "800 documents in" in rerun.out
    assert sorted(p.name for p in out.iterdir()) == ["_work", "data", "rejected", "report.html", "summary.json"]


def children(pid: int) -> list[int]:
    """Pool workers of `pid`: its live child processes running the same command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"curation.cli" in cmdline:
            found.append(int(entry))
    return found


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_item11_killing_the_runner_kills_its_pool_workers(tmp_path: Path, sig: signal.Signals) -> None:
    inp = write_input(tmp_path / "in", files=4, rows=400)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", parallelism=4,
                      stages=[{"type": "minhash-dedup"}, {"type": "exact-dedup"}])
    run = start_thresher("run", "--quiet", "--workers", "2", str(spec), quiet=True)
    workers: list[int] = []
    try:
        while run.poll() is None and not workers:
            workers = children(run.pid)
            time.sleep(0.002)
        if not workers:
            pytest.skip("the run finished before its pool started")
        settled = time.monotonic() + 0.5  # past the workers' start-up (their initializer ran)
        while time.monotonic() < settled and not all(threads(p) > 1 for p in workers):
            time.sleep(0.005)
        for pid in workers:  # a worker stuck in its rank: it would never finish on its own
            os.kill(pid, signal.SIGSTOP)
        run.send_signal(sig)
        run.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in workers if alive(p)] == []
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
            run.wait()
