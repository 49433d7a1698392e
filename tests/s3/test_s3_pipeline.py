"""The pipeline on a real S3 server (SeaweedFS): same output as on a local disk, a killed run resumes
to the same output, bad store settings get one clear line, models are fetched once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from tests.adversarial.support import assert_one_clear_line, thresher
from tests.s3.server import READER, SeaweedS3

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "data" / "sample"


def quickstart(inp: str, out: str, endpoint: str | None, **s3: Any) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    spec["input"]["path"], spec["output"]["path"] = inp, out
    spec["input"].pop("pvc", None)
    spec["output"].pop("pvc", None)
    if endpoint is not None:
        spec["storage"] = {"s3": {"endpoint": endpoint, "connectTimeoutSeconds": 2, "requestTimeoutSeconds": 20,
                                  "maxAttempts": 2, **s3}}
    return doc


def write(tmp: Path, doc: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def published(fs: pafs.FileSystem, root: str) -> dict[str, Any]:
    """Everything a reader of the output gets: each manifest's shards, their rows, the summary."""
    out: dict[str, Any] = {}
    for sub in ("data", "rejected"):
        with fs.open_input_stream(f"{root}/{sub}/_manifest.json") as f:
            manifest = json.loads(f.read())
        tables = []
        for shard in manifest["shards"]:
            tables.append(pq.read_table(f"{root}/{sub}/{shard['name']}", filesystem=fs).to_pylist())
        out[sub] = (len(manifest["shards"]), manifest["rows"], tables)
    with fs.open_input_stream(f"{root}/summary.json") as f:
        summary = json.loads(f.read())
    out["totals"] = summary["totals"]
    return out


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("local")
    result = thresher("run", str(write(tmp, quickstart(str(SAMPLE), str(tmp / "out"), None))), "--quiet",
                      timeout=300)
    assert result.code == 0, result.err
    return published(pafs.LocalFileSystem(), str(tmp / "out"))


def test_quickstart_on_s3_gives_the_local_output(tmp_path: Path, s3_server: SeaweedS3, bucket: str,
                                                 local_reference: dict[str, Any]) -> None:
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    before = sorted((i.path, i.size) for i in s3_server.filesystem().get_file_info(
        pafs.FileSelector(f"{bucket}/sample", recursive=True)))
    spec = write(tmp_path, quickstart(f"s3://{bucket}/sample", f"s3://{bucket}/out", s3_server.endpoint))
    result = thresher("run", str(spec), env=s3_server.env(), timeout=300)
    assert result.code == 0, result.err
    assert "conservation holds" in result.out
    fs = s3_server.filesystem()
    assert published(fs, f"{bucket}/out") == local_reference
    after = sorted((i.path, i.size) for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/sample", recursive=True)))
    assert after == before  # the input is never written to
    names = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/out", recursive=True))]
    assert not [n for n in names if "/.tmp-" in n]  # no rename protocol on a store: no temporary objects
    assert not [n for n in names if n.startswith(f"{bucket}/out/_work/corpus")]  # _work removed at the end

    # report and explain read the s3:// output: settings from --spec, or from the AWS variables
    rejected = next(r for t in local_reference["rejected"][2] for r in t if r["reason"] == "exact-duplicate")
    report = thresher("report", f"s3://{bucket}/out", "--spec", str(spec), env=s3_server.env(), timeout=120)
    assert report.code == 0, report.err
    assert f"report: {bucket}/out/report.html" in report.out
    for how in (("--spec", str(spec)), ()):
        env = {**s3_server.env(), **({} if how else {"AWS_ENDPOINT_URL_S3": s3_server.endpoint})}
        explained = thresher("explain", rejected["doc_id"], "--output", f"s3://{bucket}/out", "--json", *how,
                             env=env, timeout=120)
        assert explained.code == 0, explained.err
        decision = json.loads(explained.out)
        assert rejected["dup_of"] in json.dumps(decision) and "exact-duplicate" in json.dumps(decision)


def test_a_run_killed_midway_on_s3_resumes_to_the_same_output(tmp_path: Path, s3_server: SeaweedS3, bucket: str,
                                                              local_reference: dict[str, Any]) -> None:
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    spec = write(tmp_path, quickstart(f"s3://{bucket}/sample", f"s3://{bucket}/out", s3_server.endpoint))
    env = {**os.environ, **s3_server.env()}
    fs = s3_server.filesystem()
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "run", str(spec), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once the first dedup step has started writing
        done = fs.get_file_info(pafs.FileSelector(f"{bucket}/out/_work/_done", allow_not_found=True, recursive=True))
        if any("exact-dedup" in i.path for i in done):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(FileNotFoundError):  # nothing published yet: no manifest a reader could trust
        fs.open_input_stream(f"{bucket}/out/data/_manifest.json")
    result = thresher("run", str(spec), env=s3_server.env(), timeout=300)
    assert result.code == 0, result.err
    assert published(fs, f"{bucket}/out") == local_reference


# ---- bad store settings: one line each, fast, the input untouched ------------------------------


def _bad(tmp: Path, server: SeaweedS3, bucket: str, env: dict[str, str], inp: str | None = None,
         out: str | None = None, endpoint: str | None = None) -> Any:
    doc = quickstart(inp or f"s3://{bucket}/sample", out or f"s3://{bucket}/out", endpoint or server.endpoint)
    started = time.monotonic()
    result = thresher("run", str(write(tmp, doc)), env=env, timeout=120)
    return result, time.monotonic() - started


@pytest.fixture
def sample_bucket(s3_server: SeaweedS3, bucket: str) -> str:
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    return bucket


def test_wrong_credentials(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    result, _ = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(("nobody", "wrong-secret")))
    assert_one_clear_line(result, 2, "input.path", sample_bucket, "credentials")


def test_missing_bucket(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    result, _ = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(), inp="s3://no-such-bucket-here/sample")
    assert_one_clear_line(result, 2, "bucket 'no-such-bucket-here' does not exist", s3_server.endpoint)


def test_missing_prefix(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    result, _ = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(), inp=f"s3://{sample_bucket}/nothing-here")
    assert_one_clear_line(result, 2, f"{sample_bucket}/nothing-here", f"bucket '{sample_bucket}'",
                          s3_server.endpoint)


def test_unreachable_endpoint_fails_fast(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    result, seconds = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(), endpoint=f"http://127.0.0.1:{closed}")
    assert_one_clear_line(result, 2, f"127.0.0.1:{closed}", "cannot be reached")
    assert seconds < 60


def test_tls_failure(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    https = s3_server.endpoint.replace("http://", "https://")
    result, _ = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(), endpoint=https)
    assert_one_clear_line(result, 2, https)


def test_output_bucket_without_write_permission(tmp_path: Path, s3_server: SeaweedS3, sample_bucket: str) -> None:
    result, _ = _bad(tmp_path, s3_server, sample_bucket, s3_server.env(READER))
    assert_one_clear_line(result, 2, "output.path", "cannot write")


def test_an_s3_path_without_storage_settings_is_refused(tmp_path: Path) -> None:
    doc = quickstart("s3://b/sample", str(tmp_path / "out"), None)
    result = thresher("validate", str(write(tmp_path, doc)))
    assert_one_clear_line(result, 2, "spec.storage.s3 is not set")


# ---- models from the store ----------------------------------------------------------------------


def test_models_are_fetched_once_to_a_node_local_cache(tmp_path: Path, s3_server: SeaweedS3, bucket: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from curation import storage
    from curation.dataset import Location
    from curation.models.loading import models_root, resolve_model

    model = tmp_path / "src" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "weights.bin").write_bytes(os.urandom(1 << 16))
    s3_server.upload_folder(tmp_path / "src", f"{bucket}/models")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    storage.configure(type("S", (), {"s3": type("T", (), {
        "endpoint": s3_server.endpoint, "region": "us-east-1", "addressing": "path", "ca_bundle": None,
        "connect_timeout_seconds": 2, "request_timeout_seconds": 20, "max_attempts": 2})()})())
    try:
        loc = Location.of(f"s3://{bucket}/models")
        path = resolve_model(models_root(loc), "tiny")
        assert path.is_dir() and (path / "weights.bin").read_bytes() == (model / "weights.bin").read_bytes()
        stamp = (path / "weights.bin").stat().st_mtime_ns
        assert resolve_model(models_root(loc), "tiny") == path
        assert (path / "weights.bin").stat().st_mtime_ns == stamp  # unchanged model: not fetched again
        with s3_server.filesystem().open_output_stream(f"{bucket}/models/tiny/weights.bin") as f:
            f.write(b"new weights")
        assert (resolve_model(models_root(loc), "tiny") / "weights.bin").read_bytes() == b"new weights"
    finally:
        storage.configure(None)
