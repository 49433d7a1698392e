"""Object-store plumbing that needs no server: URIs, spec checks, error lines, credentials wiring.
(Everything that talks to a store is in tests/s3, against a real SeaweedFS.)"""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from curation import storage
from curation.dataset import Location
from curation.errors import SpecError
from curation.spec import parse_spec

BASE = {"stages": [{"type": "exact-dedup"}]}
S3 = {"s3": {"endpoint": "http://seaweedfs.storage:8333"}}


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    storage.configure(None)


def test_an_s3_uri_resolves_to_bucket_and_key_on_the_configured_endpoint() -> None:
    spec = parse_spec({**BASE, "input": {"path": "s3://corpora/web/2026/"}, "output": {"path": "/out"},
                       "storage": S3})
    storage.configure(spec.storage)
    loc = Location.of("s3://corpora/web/2026/")
    assert isinstance(loc.fs, pafs.S3FileSystem) and loc.path == "corpora/web/2026"
    assert storage.is_object_store(loc.fs) and loc.join("a.parquet").path == "corpora/web/2026/a.parquet"
    assert storage.settings().endpoint == "http://seaweedfs.storage:8333"


def test_other_schemes_and_malformed_uris_are_refused() -> None:
    with pytest.raises(SpecError, match="unsupported scheme gs://"):
        storage.resolve("gs://bucket/x")
    with pytest.raises(SpecError, match="not an s3://bucket/prefix URI"):
        storage.split_uri("s3:///nobucket")


def test_an_s3_path_needs_storage_settings_and_no_pvc() -> None:
    with pytest.raises(SpecError, match=r"input.path s3://b/x is an s3:// URI but spec.storage.s3 is not set"):
        parse_spec({**BASE, "input": {"path": "s3://b/x"}, "output": {"path": "/out"}})
    with pytest.raises(SpecError, match=r"output.pvc: output.path s3://b/out is in an object store; remove `pvc`"):
        parse_spec({**BASE, "input": {"path": "in"}, "output": {"path": "s3://b/out", "pvc": "data"}, "storage": S3})
    with pytest.raises(SpecError, match=r"spec.storage.s3.endpoint"):
        parse_spec({**BASE, "input": {"path": "in"}, "output": {"path": "/o"},
                    "storage": {"s3": {"endpoint": "seaweedfs:8333"}}})


@pytest.mark.parametrize(("error", "hint"), [
    ("AWS Error ACCESS_DENIED during HeadBucket operation: No response body.", "credentials were refused"),
    ("AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: curl code 7", "cannot be reached"),
    ("AWS Error NO_SUCH_BUCKET during HeadObject operation", "bucket does not exist"),
    ("SSL peer certificate or SSH remote key was not OK", "TLS verification failed"),
])
def test_store_failures_become_one_actionable_line(error: str, hint: str) -> None:
    storage.configure(parse_spec({**BASE, "input": {"path": "in"}, "output": {"path": "/o"}, "storage": S3}).storage)
    line = storage.describe(OSError(error), "curated/out/_work")
    assert "\n" not in line and "http://seaweedfs.storage:8333" in line and "curated/out/_work" in line
    assert hint in line


@pytest.mark.parametrize(("error", "permanent"), [
    ("When getting information for key 'in/a.parquet' in bucket 'corpora': AWS Error ACCESS_DENIED during "
     "HeadObject operation: No response body.", True),
    ("When listing objects under key 'in' in bucket 'corpora': AWS Error NETWORK_CONNECTION during "
     "ListObjectsV2 operation: curlCode: 7, Couldn't connect to server", False),
])
def test_a_store_failure_inside_a_step_is_one_line_and_only_network_failures_are_retried(
        error: str, permanent: bool) -> None:
    from curation.executor import disk_full_is_an_error

    storage.configure(parse_spec({**BASE, "input": {"path": "in"}, "output": {"path": "/o"}, "storage": S3}).storage)
    with pytest.raises(storage.StorageError) as caught, disk_full_is_an_error("/o"):
        raise OSError(error)
    err = caught.value
    assert "http://seaweedfs.storage:8333" in err.message and "bucket 'corpora'" in err.message
    assert (err.permanent, err.exit_code, err.reason) == (permanent, 2 if permanent else 4, "StorageUnavailable")
    with pytest.raises(OSError, match="unrelated"), disk_full_is_an_error("/o"):
        raise OSError("unrelated local failure")  # not a store's: passes through unchanged


def test_step_pods_get_credentials_from_the_secret_and_no_metadata_lookups() -> None:
    from curation_operator.builders import storage_env

    spec = parse_spec({**BASE, "input": {"path": "s3://in/sample"}, "output": {"path": "s3://out/run"},
                       "storage": {"s3": {**S3["s3"], "credentialsSecret": "thresher-s3"}}})
    env = {e["name"]: e for e in storage_env(spec)}
    assert env["AWS_EC2_METADATA_DISABLED"]["value"] == "true"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "thresher-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "thresher-s3"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # never a literal credential
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    local = parse_spec({**BASE, "input": {"path": "in"}, "output": {"path": "/o"}})
    assert storage_env(local) == []


def test_metadata_endpoint_lookups_are_disabled_before_the_first_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    storage.s3_filesystem(storage.S3Settings(endpoint="http://127.0.0.1:1", region="eu-test-1"))
    import os

    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
