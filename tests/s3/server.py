"""A real S3 server for the tests: SeaweedFS (`weed server -s3`) in one process on loopback ports.

Built from the Go module proxy by `tests/s3/build.sh` (cached outside the repo). Identities:
`admin` (read, write, list, admin: creates buckets) and `reader` (read and list only), so a test
can show what a bucket without write permission does. No mock: listing, multipart uploads and
concurrency behave as a production store's do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADMIN = ("thresheradmin", "thresher-admin-secret-key")
READER = ("thresherreader", "thresher-reader-secret-key")


def weed_binary() -> Path:
    """Build (or find cached) `weed`; the build script prints its bin folder last."""
    explicit = os.environ.get("THRESHER_WEED")
    if explicit:
        return Path(explicit)
    out = subprocess.run(["bash", str(HERE / "build.sh")], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"tests/s3/build.sh failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1]) / "weed"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class SeaweedS3:
    root: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, who: tuple[str, str] = ADMIN) -> dict[str, str]:
        """The environment a Thresher process needs to use the store as `who`."""
        return {"AWS_ACCESS_KEY_ID": who[0], "AWS_SECRET_ACCESS_KEY": who[1], "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, timeout: float = 90.0, metrics_port: int = 0) -> None:
        """Start the server; with `metrics_port`, its Prometheus metrics (request counts by S3
        action, which bench/s3_read.py reads) are served on that loopback port."""
        weed = weed_binary()
        master, volume, filer, s3, grpc_m, grpc_v, grpc_f, grpc_s3 = free_ports(8)
        # SeaweedFS derives each gRPC port as port + 10000 unless told; give them explicitly.
        self.port = s3
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
        ]}))
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "weed.log"
        cmd = [
            str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={master}", f"-master.port.grpc={grpc_m}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc_v}",
            f"-filer.port={filer}", f"-filer.port.grpc={grpc_f}",
            "-filer", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc_s3}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # side services on fixed ports: not needed
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
        ] + ([f"-metricsPort={metrics_port}"] if metrics_port else [])
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
            if self._ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"weed S3 gateway not ready after {timeout:.0f}s:\n{self.log.read_text()[-4000:]}")

    def _ready(self) -> bool:
        try:
            self.create_bucket(f"ready-{os.getpid()}")
            return True
        except OSError:
            return False

    def filesystem(self, who: tuple[str, str] = ADMIN, create: bool = False):  # type: ignore[no-untyped-def]
        import pyarrow.fs as pafs

        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        return pafs.S3FileSystem(access_key=who[0], secret_key=who[1], endpoint_override=f"127.0.0.1:{self.port}",
                                 scheme="http", region="us-east-1", allow_bucket_creation=create,
                                 connect_timeout=2, request_timeout=20,
                                 retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))

    def create_bucket(self, name: str) -> None:
        self.filesystem(create=True).create_dir(name)

    def upload_folder(self, local: Path, uri_path: str) -> None:
        """Copy a local folder to `bucket/prefix` (what a user's `aws s3 sync` would do)."""
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), uri_path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None


def start_server(metrics_port: int = 0) -> SeaweedS3:
    root = Path(tempfile.mkdtemp(prefix="thresher-s3-"))
    server = SeaweedS3(root)
    try:
        server.start(metrics_port=metrics_port)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def running_server(metrics_port: int = 0):  # type: ignore[no-untyped-def]
    """A started server for a pytest fixture (yields it, stops it and removes its data after)."""
    server = start_server(metrics_port=metrics_port)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
