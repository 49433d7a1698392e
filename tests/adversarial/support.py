"""Running `thresher` as a user does: a subprocess, its exit code, its stdout and stderr."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

CHEAP_STAGES: list[dict[str, Any]] = [{"type": "exact-dedup"}]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The last line on stderr (where the CLI prints `error: ...`)."""
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def thresher(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 60) -> Result:
    """`thresher ARGS` in a fresh interpreter (the installed entry point's code path)."""
    proc = subprocess.run(
        [sys.executable, "-m", "curation.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_thresher(*args: str, cwd: Path | None = None, quiet: bool = False) -> subprocess.Popen[str]:
    """`thresher ARGS` in the background; `quiet`: no pipes (its children cannot hold them open)."""
    stream = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "curation.cli", *args], cwd=cwd, text=True,
                            stdout=stream, stderr=stream)


def assert_one_clear_line(result: Result, code: int, *phrases: str) -> None:
    """A non-zero exit with the documented code and one `error:` line (no traceback)."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, (result.code, result.err)
    assert result.error_line.startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in result.error_line, (phrase, result.error_line)


def digest(folder: Path) -> dict[str, str]:
    """Every file below `folder` (symbolic links by target name) and its content hash."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def texts(n: int, salt: str = "") -> list[str]:
    return [f"document {salt}{i} talks about the weather, the river and the long road home {i * 7919 % 1000}"
            for i in range(n)]


def write_parquet(path: Path, columns: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_input(folder: Path, files: int = 2, rows: int = 10, prefix: str = "d") -> Path:
    """`files` Parquet files of `rows` documents with string ids `doc_id` and `text`."""
    for f in range(files):
        ids = [f"{prefix}{f}-{i:04d}" for i in range(rows)]
        write_parquet(folder / f"part-{f}.parquet", {"doc_id": ids, "text": texts(rows, f"{prefix}{f}-")})
    return folder


def write_spec(path: Path, inp: Path | str, out: Path | str, stages: list[dict[str, Any]] | None = None,
               parallelism: int = 1, **input_kw: Any) -> Path:
    doc = {"input": {"path": str(inp), "idField": "doc_id", **input_kw}, "output": {"path": str(out)},
           "parallelism": parallelism, "stages": stages or CHEAP_STAGES}
    if input_kw.get("idField", "doc_id") is None:
        doc["input"].pop("idField")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def read_dataset(folder: Path) -> pa.Table:
    return pq.read_table(folder)
