"""The quickstart as a CurationJob with no PVC at all: input and output on a real S3 server
(SeaweedFS, tests/s3), credentials from a Secret the operator maps into the step pods. The output
is the local runner's; a Secret with the wrong keys fails the job with one actionable condition."""

# ruff: noqa: F811 - fixtures are imported from tests/operator/cluster_support.py by name

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs
import pytest
from k8s_helpers import wait_for
from kubernetes import client

from tests.operator.cluster_support import (  # noqa: F401 - fixtures
    SAMPLE,
    cj_condition,
    dataset_content,
    events_of,
    get_cj,
    local_reference,
    operator,
    operator_factory,
    operator_install,
    quickstart_document,
    wait_for_cj,
    wait_succeeded,
)
from tests.s3.server import ADMIN, SeaweedS3, running_server

pytestmark = [pytest.mark.cluster, pytest.mark.s3]
SECRET = "thresher-s3"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[SeaweedS3]:
    yield from running_server()


def s3_job(server: SeaweedS3, bucket: str, name: str = "quickstart") -> dict[str, Any]:
    doc = quickstart_document(name)
    spec = doc["spec"]
    spec["input"] = {**{k: v for k, v in spec["input"].items() if k != "pvc"}, "path": f"s3://{bucket}/sample"}
    spec["output"] = {**{k: v for k, v in spec["output"].items() if k != "pvc"}, "path": f"s3://{bucket}/out"}
    spec["storage"] = {"s3": {"endpoint": server.endpoint, "credentialsSecret": SECRET,
                              "connectTimeoutSeconds": 2, "requestTimeoutSeconds": 20, "maxAttempts": 2}}
    return doc


def apply_secret(kubectl: Any, namespace: str, keys: tuple[str, str]) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace},
              "stringData": {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))


def listing(fs: pafs.FileSystem, root: str) -> list[tuple[str, int]]:
    return sorted((i.path, i.size) for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)))


def test_quickstart_curation_job_with_no_pvc_runs_on_s3_with_the_local_output(
    namespace, kubectl, k8s_api, operator, local_reference, s3_server, tmp_path
):
    bucket = f"cj-{namespace}"[:63]
    s3_server.create_bucket(bucket)
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    fs = s3_server.filesystem()
    before = listing(fs, f"{bucket}/sample")
    apply_secret(kubectl, namespace, ADMIN)
    doc = s3_job(s3_server, bucket)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    # the first step's Job: no volume but the spec's ConfigMap and the scratch emptyDir, and the
    # keys come from the Secret (Jobs are deleted once their counts are in the status)
    batch = client.BatchV1Api(k8s_api)
    jobs = wait_for(lambda: batch.list_namespaced_job(namespace).items, timeout=60, message="a step Job")
    pod = jobs[0].spec.template.spec
    assert not [v for v in pod.volumes or [] if v.persistent_volume_claim], jobs[0].metadata.name
    env = {e.name: e for e in pod.containers[0].env}
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.name == SECRET
    assert env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == SECRET
    assert env["AWS_EC2_METADATA_DISABLED"].value == "true"
    wait_succeeded(kubectl, namespace)

    # the published output, downloaded, is the local runner's; the input is untouched
    local_out, _ = local_reference
    (tmp_path / "data").mkdir()
    pafs.copy_files(f"{bucket}/out/data", str(tmp_path / "data"), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    assert dataset_content(tmp_path / "data") == dataset_content(local_out / "data")
    assert listing(fs, f"{bucket}/sample") == before
    names = [p for p, _ in listing(fs, f"{bucket}/out")]
    assert f"{bucket}/out/summary.json" in names and f"{bucket}/out/report.html" in names
    assert not [n for n in names if "/.tmp-" in n]

    status = get_cj(k8s_api, namespace, "quickstart")["status"]
    with fs.open_input_stream(f"{bucket}/out/summary.json") as f:
        summary = json.loads(f.read())
    local_summary = json.loads((local_out / "summary.json").read_text())
    assert summary["totals"] == local_summary["totals"]
    assert (status["docsIn"], status["docsOut"], status["docsRemoved"]) == (
        summary["totals"]["input_docs"], summary["totals"]["output_docs"], summary["totals"]["rejected_docs"])
    assert status["docsIn"] + status["docsGenerated"] == status["docsOut"] + status["docsRemoved"]


def test_a_secret_with_wrong_keys_fails_the_job_naming_the_endpoint_and_bucket(
    namespace, kubectl, k8s_api, operator, s3_server
):
    bucket = f"cj-{namespace}"[:63]
    s3_server.create_bucket(bucket)
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    apply_secret(kubectl, namespace, (ADMIN[0], "not-the-secret-key"))
    doc = s3_job(s3_server, bucket)
    doc["spec"]["retries"] = 3  # a refused credential is permanent: no retry is spent on it
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    cj = wait_for_cj(k8s_api, namespace, "quickstart",
                     lambda o: (o.get("status") or {}).get("phase") == "Failed", 180)
    failed = cj_condition(cj, "Failed")
    print("Failed condition:", failed["reason"], failed["message"])
    assert failed["status"] == "True" and failed["reason"] == "StorageUnavailable", failed
    for part in (s3_server.endpoint, bucket, "credentials"):
        assert part in failed["message"], failed["message"]
    wait_for(lambda: any(e["type"] == "Warning" and e["reason"] == "StorageUnavailable" and bucket in e["message"]
                         for e in events_of(k8s_api, namespace, "quickstart")),
             timeout=30, message="a Warning event naming the bucket")
    step = next(s for s in cj["status"]["steps"] if s["id"] == cj["status"]["currentStep"])
    assert step["phase"] == "Failed" and step["retries"] == 0, step
    assert not [p for p, _ in listing(s3_server.filesystem(), bucket) if p.startswith(f"{bucket}/out/")]
