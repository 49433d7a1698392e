"""`output.tokenize` on an s3:// output: the same token files, byte for byte, as on a local disk."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.adversarial.support import thresher
from tests.helpers import sample_models_dir
from tests.s3.server import SeaweedS3
from tests.s3.test_s3_pipeline import SAMPLE, quickstart, write

pytest.importorskip("tokenizers")

MODELS = sample_models_dir()


def with_tokens(doc: dict, models: str) -> dict:
    doc["spec"]["output"]["tokenize"] = {"tokenizer": "all-MiniLM-L6-v2", "fileBytes": 400_000}
    doc["spec"]["models"] = {"path": models}
    return doc


def token_files(fs: pafs.FileSystem, root: str) -> dict[str, bytes]:
    manifest = json.loads(fs.open_input_stream(f"{root}/tokens/_manifest.json").read())
    out = {}
    for f in manifest["files"]:
        for key in ("megatron.bin", "megatron.idx", "numpy.tokens", "numpy.offsets"):
            out[f[key]] = bytes(fs.open_input_stream(f"{root}/tokens/{f[key]}").read())
    return out


def test_token_files_on_s3_equal_the_local_ones(tmp_path: Path, s3_server: SeaweedS3, bucket: str) -> None:
    local = write(tmp_path, with_tokens(quickstart(str(SAMPLE), str(tmp_path / "out"), None), str(MODELS)), "l.yaml")
    assert thresher("run", str(local), "--quiet", timeout=300).code == 0
    s3_server.upload_folder(SAMPLE, f"{bucket}/sample")
    remote = write(tmp_path, with_tokens(quickstart(f"s3://{bucket}/sample", f"s3://{bucket}/out",
                                                    s3_server.endpoint), str(MODELS)), "s.yaml")
    result = thresher("run", str(remote), "--quiet", env=s3_server.env(), timeout=300)
    assert result.code == 0, result.err
    expected = token_files(pafs.LocalFileSystem(), str(tmp_path / "out"))
    assert len(expected) >= 8  # several merged files, both formats
    assert token_files(s3_server.filesystem(), f"{bucket}/out") == expected
