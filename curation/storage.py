"""Where bytes live: local folders and S3-compatible object stores (Ceph RGW, MinIO, SeaweedFS).

A path in a spec is either a local path or `s3://bucket/prefix`. The S3 settings come from the
spec (`spec.storage.s3`: endpoint, region, addressing style, CA bundle, timeouts) and the
credentials from the environment only: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
`AWS_SESSION_TOKEN`), or a profile (`AWS_PROFILE`, `~/.aws/credentials`). In a cluster the
operator maps the keys of the Secret named by `credentialsSecret` into those variables.

Nothing here ever asks a cloud metadata endpoint for credentials or a region: on an air-gapped
site that request hangs. `AWS_EC2_METADATA_DISABLED` is set before the first S3 client exists.

Commit protocol. An object store has no atomic rename ("rename" is a copy), but a PUT (or a
completed multipart upload) is atomic: an object is visible whole or not at all. So on S3 every
file is written straight under its final, deterministic name; the small marker a rank writes last
is the completion record readers trust (`RankMarker`), and a rerun overwrites the same names.
Listing is never the source of truth for what a step produced.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from curation.errors import CurationError, SpecError

S3_SCHEMES = ("s3://",)
METADATA_ENV = {"AWS_EC2_METADATA_DISABLED": "true"}


class StorageError(CurationError):
    """The object store refused or could not be reached (credentials, bucket, endpoint, TLS)."""

    reason = "StorageUnavailable"

    def __init__(self, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.exit_code = 2 if permanent else 4


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None  # http(s)://host:port; None: the AWS default for `region`
    region: str = "us-east-1"
    addressing: str = "path"  # "path" (on-prem default) or "virtual"
    ca_bundle: str | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 60.0
    max_attempts: int = 3

    @classmethod
    def from_spec(cls, s3: Any) -> S3Settings:
        """The spec's settings; an endpoint the spec leaves out comes from the standard
        `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables (as AWS's own tools read them)."""
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        if s3 is None:
            return cls(endpoint=env)
        return cls(endpoint=s3.endpoint or env, region=s3.region, addressing=s3.addressing, ca_bundle=s3.ca_bundle,
                   connect_timeout=float(s3.connect_timeout_seconds),
                   request_timeout=float(s3.request_timeout_seconds), max_attempts=int(s3.max_attempts))


_lock = threading.Lock()
_settings = S3Settings()
_filesystems: dict[S3Settings, pafs.S3FileSystem] = {}


def configure(storage: Any) -> None:
    """Use the S3 settings of a spec's `storage` section for every `s3://` path from now on."""
    global _settings
    s3 = getattr(storage, "s3", None) if storage is not None else None
    with _lock:
        _settings = S3Settings.from_spec(s3)


def settings() -> S3Settings:
    return _settings


def is_uri(path: str) -> bool:
    return path.startswith(S3_SCHEMES)


def is_object_store(fs: pafs.FileSystem) -> bool:
    return fs.type_name == "s3"


def uri_of(loc: Any) -> str:
    """The path or `s3://` URI that resolves back to `loc` (a dataset.Location)."""
    return f"s3://{loc.path}" if is_object_store(loc.fs) else str(loc.path)


def split_uri(path: str) -> tuple[str, str]:
    """(bucket, key prefix) of `s3://bucket/prefix`."""
    parsed = urlparse(path)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SpecError(f"{path}: not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/").rstrip("/")


def s3_filesystem(s: S3Settings | None = None) -> pafs.S3FileSystem:
    """One S3 client per settings, credentials from the environment (never a metadata endpoint)."""
    s = s or _settings
    with _lock:
        fs = _filesystems.get(s)
        if fs is None:
            for key, value in METADATA_ENV.items():
                os.environ.setdefault(key, value)
            kwargs: dict[str, Any] = {
                "region": s.region,
                "connect_timeout": s.connect_timeout,
                "request_timeout": s.request_timeout,
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s.max_attempts),
                "force_virtual_addressing": s.addressing == "virtual",
                "allow_bucket_creation": False,
                "allow_bucket_deletion": False,
                "check_directory_existence_before_creation": True,
            }
            if s.endpoint:
                parsed = urlparse(s.endpoint)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise SpecError(f"spec.storage.s3.endpoint {s.endpoint!r}: expected http(s)://host[:port]")
                kwargs["scheme"] = parsed.scheme
                kwargs["endpoint_override"] = parsed.netloc
            if s.ca_bundle:
                if not os.path.isfile(s.ca_bundle):
                    raise SpecError(f"spec.storage.s3.caBundle {s.ca_bundle}: no such file")
                kwargs["tls_ca_file_path"] = s.ca_bundle
            key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
            if key and secret:
                kwargs["access_key"], kwargs["secret_key"] = key, secret
                if os.environ.get("AWS_SESSION_TOKEN"):
                    kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
            fs = pafs.S3FileSystem(**kwargs)
            _filesystems[s] = fs
    return fs


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an `s3://bucket/prefix` URI."""
    if is_uri(path):
        bucket, key = split_uri(path)
        return s3_filesystem(), f"{bucket}/{key}".rstrip("/")
    if "://" in path:
        scheme = path.split("://", 1)[0]
        raise SpecError(f"{path}: unsupported scheme {scheme}://; use a local path or s3://bucket/prefix")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def endpoint_name() -> str:
    """The store requests go to, as a person reads it (messages name it)."""
    return f"endpoint {_settings.endpoint}" if _settings.endpoint else f"AWS {_settings.region}"


_S3_ERROR = re.compile(r"AWS Error|in bucket '|bucket '[^']*'|curlCode|S3 ", re.IGNORECASE)
_IN_BUCKET = re.compile(r"bucket '([^']+)'")


def _kind(text: str) -> str:
    low = text.lower()
    if "access_denied" in low or "accessdenied" in low or "403" in low or "invalidaccesskeyid" in low \
            or "signaturedoesnotmatch" in low or "forbidden" in low:
        return "denied"
    if "nosuchbucket" in low or "bucket does not exist" in low or "no_such_bucket" in low:
        return "bucket"
    if "ssl" in low or "certificate" in low or "tls" in low:
        return "tls"
    if "connect" in low or "timeout" in low or "timed out" in low or "resolve" in low or "network" in low \
            or "curl" in low:
        return "network"
    return "other"


def as_storage_error(err: OSError) -> StorageError | None:
    """An object-store failure raised mid-step (a pyarrow S3 `OSError`) as one clear line, or None
    for any other `OSError`. Refusals (credentials, permission, bucket, TLS) are permanent; a network
    failure is not (the step is retried)."""
    text = str(err)
    if not _S3_ERROR.search(text):
        return None
    found = _IN_BUCKET.search(text)
    where = f"bucket '{found.group(1)}'" if found else "the store"
    return StorageError(describe(err, where), permanent=_kind(text) != "network")


def describe(err: BaseException, path: str) -> str:
    """One line for an object-store failure: what went wrong, where, what to do."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    where = f"{endpoint_name()}, {path}"
    kind = _kind(text)
    if kind == "denied":
        hint = "the credentials were refused or lack permission; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY " \
               "(the credentialsSecret in a cluster) and the bucket policy"
    elif kind == "bucket":
        hint = "the bucket does not exist; create it or fix the path"
    elif kind == "tls":
        hint = "TLS verification failed; set spec.storage.s3.caBundle to the site's CA certificate"
    elif kind == "network":
        hint = "the endpoint cannot be reached; check spec.storage.s3.endpoint and the network policy"
    else:
        hint = "check the endpoint, bucket and credentials"
    return f"object store ({where}): {text}; {hint}"


def check_access(loc: Any, what: str, uri: str, write: bool = False) -> None:
    """Fail fast, in one line, when the bucket behind `loc` is missing, unreachable, refuses the
    credentials or (with `write`) refuses a write. `loc` is a `dataset.Location` on S3."""
    import uuid

    bucket = loc.path.split("/", 1)[0]
    try:
        info = loc.fs.get_file_info(bucket)
    except OSError as err:
        raise StorageError(f"{what} {uri}: " + describe(err, bucket)) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{what} {uri}: bucket '{bucket}' does not exist at "
                           f"{endpoint_name()}; create it or fix the path")
    if not write:
        try:
            loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False))
        except OSError as err:
            raise StorageError(f"{what} {uri}: " + describe(err, loc.path)) from None
        return
    probe = f"{loc.path.rstrip('/')}/.thresher-probe-{uuid.uuid4().hex}"
    try:
        with loc.fs.open_output_stream(probe) as f:
            f.write(b"probe")
        loc.fs.delete_file(probe)
    except OSError as err:
        raise StorageError(f"{what} {uri}: cannot write ({describe(err, probe)})") from None


# ---- models from an object store: one node-local copy, fetched once ------------------------------

MODEL_CACHE_ENV = "THRESHER_MODEL_CACHE"
SOURCE_FILE = ".thresher-source.json"
_model_roots: dict[str, Any] = {}  # local cache root -> the models Location it mirrors


def model_cache_root(loc: Any) -> Any:
    """The node-local folder that mirrors the models location `loc` (on S3). Models are fetched
    into it by `fetch_model` when a stage resolves them (in a cluster: an emptyDir per pod)."""
    from pathlib import Path

    base = os.environ.get(MODEL_CACHE_ENV) or str(Path.home() / ".cache" / "thresher" / "s3-models")
    root = Path(base) / loc.path.strip("/")
    _model_roots[str(root)] = loc
    return root


def fetch_model(root: Any, name: str) -> None:
    """Copy model `name` (one object or a prefix) from the object store into the cache `root`,
    under a file lock, unless the cached copy lists the same objects (names, sizes, mtimes)."""
    import fcntl
    import json
    import shutil
    import tempfile
    from pathlib import Path

    loc = _model_roots.get(str(root))
    if loc is None:
        return  # a local models folder: nothing to fetch
    source = loc.join(name)
    try:
        info = loc.fs.get_file_info(source.path)
        if info.type == pafs.FileType.File:
            objects = [info]
        elif info.type == pafs.FileType.Directory:
            objects = [i for i in loc.fs.get_file_info(pafs.FileSelector(source.path, recursive=True))
                       if i.type == pafs.FileType.File]
        else:
            return  # absent: resolve_model says so, naming the location
    except OSError as err:
        raise StorageError(f"models.path: {describe(err, source.path)}") from None
    fingerprint = sorted([o.path[len(source.path):].lstrip("/"), o.size, str(o.mtime)] for o in objects)
    target = Path(root) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node, whatever the number of pods
        marker = (target if info.type == pafs.FileType.Directory else target.parent) / (
            SOURCE_FILE if info.type == pafs.FileType.Directory else f".{target.name}{SOURCE_FILE}")
        try:
            if target.exists() and json.loads(marker.read_text()) == fingerprint:
                return
        except (OSError, ValueError):
            pass
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            for obj in objects:
                rel = obj.path[len(source.path):].lstrip("/") or target.name
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with loc.fs.open_input_stream(obj.path) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 8 << 20)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if info.type == pafs.FileType.Directory:
                (tmp / SOURCE_FILE).write_text(json.dumps(fingerprint))
                tmp.rename(target)
            else:
                (tmp / target.name).rename(target)
                marker.write_text(json.dumps(fingerprint))
        except OSError as err:
            raise StorageError(f"models.path: {describe(err, source.path)}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
