"""Object store vs local disk, step by step, on the same data: seconds, MB/s read, objects and requests.

    python bench/s3_read.py --docs 100000            # needs `weed` (tests/s3/build.sh builds it)

Generates (or reuses) the synthetic corpus of `scale_corpus.py`, uploads it to a SeaweedFS S3
server started on loopback (tests/s3/server.py, with its Prometheus metrics on), and runs one
pipeline (`--stages`, default MinHash dedup alone) twice: input and output on local disk, and input
and output on the store. The steps run one rank each, in plan order, interleaved (local step k,
then S3 step k) so that both see the same machine load. Per step it records wall and CPU seconds,
the bytes and objects the step read (the engine's own `bytes_read` / `objects_read`), read MB/s
(= bytes read / wall seconds), and the HTTP requests the store served for it, by method (from
SeaweedFS's `SeaweedFS_s3_request_total`; SeaweedFS counts HEAD and listing requests as GET). The
two published outputs are compared row for row.

Results go to stdout and to `--json` (default bench/results/s3-read-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import scale_corpus as corpus  # bench/ is on sys.path when this file runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curation.executor import run_rank  # noqa: E402
from curation.plan import plan_steps  # noqa: E402
from curation.spec import parse_spec  # noqa: E402
from tests.s3.server import ADMIN, SeaweedS3, free_ports, start_server  # noqa: E402


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def requests(metrics_port: int, bucket: str) -> dict[str, int]:
    """Requests the store has served for `bucket` so far, by HTTP method."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("SeaweedFS_s3_request_total{") and f'bucket="{bucket}"' in line:
            method = line.split('type="', 1)[1].split('"', 1)[0]
            out[method] = out.get(method, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def spec_for(inp: str, out: str, stages: list[dict[str, Any]], endpoint: str | None) -> Any:
    doc: dict[str, Any] = {"input": {"path": inp, "idField": "doc_id"}, "output": {"path": out},
                           "parallelism": 1, "stages": stages}
    if endpoint:
        doc["storage"] = {"s3": {"endpoint": endpoint}}
    return parse_spec(doc)


def published(fs: pafs.FileSystem, root: str) -> list[tuple[str, list[str]]]:
    with fs.open_input_stream(f"{root}/data/_manifest.json") as f:
        manifest = json.loads(f.read())
    return [(s["name"], pq.read_table(f"{root}/data/{s['name']}", filesystem=fs, columns=["doc_id"])
             .column("doc_id").to_pylist()) for s in manifest["shards"]]


def run_step(spec: Any, step_id: str) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    stats = run_rank(spec, step_id, 0, 1)
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu,
            "bytes_read": int(stats.get("bytes_read", 0)), "objects_read": int(stats.get("objects_read", 0))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=None, help="corpus and local output (default: a temp dir)")
    ap.add_argument("--stages", default='[{"type": "minhash-dedup"}]', help="the pipeline's stages, as JSON")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    today = datetime.date.today().isoformat()
    target = args.json or REPO / "bench" / "results" / f"s3-read-{today}.json"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="thresher-s3-bench-"))
    stages = json.loads(args.stages)

    corpus_dir = work / f"corpus-{args.docs}"
    manifest = corpus.generate(corpus_dir, args.docs)
    files = sorted(corpus_dir.glob("part-*.parquet"))
    input_bytes = sum(f.stat().st_size for f in files)
    print(f"corpus: {args.docs:,} documents, {len(files)} files, {input_bytes / 1e6:.1f} MB on disk")

    metrics_port = free_ports(1)[0]
    server: SeaweedS3 = start_server(metrics_port=metrics_port)
    try:
        bucket = "bench"
        server.create_bucket(bucket)
        fs = server.filesystem()
        for f in files:
            pafs.copy_files(str(f), f"{bucket}/corpus/{f.name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        import os

        os.environ.update(server.env(ADMIN))
        local_out = work / "out-local"
        shutil.rmtree(local_out, ignore_errors=True)
        local = spec_for(str(corpus_dir), str(local_out), stages, None)
        remote = spec_for(f"s3://{bucket}/corpus", f"s3://{bucket}/out", stages, server.endpoint)
        rows: list[dict[str, Any]] = []
        print(f"{'step':34} {'local s':>8} {'s3 s':>8} {'read MB':>8} {'local MB/s':>10} {'s3 MB/s':>8} "
              f"{'objects':>7} {'GET':>5} {'PUT':>5} {'POST':>5} {'DEL':>4}")
        for step in plan_steps(local):
            a = run_step(local, step.id)
            before = requests(metrics_port, bucket)
            b = run_step(remote, step.id)
            after = requests(metrics_port, bucket)
            served = {m: after.get(m, 0) - before.get(m, 0) for m in sorted(set(after) | set(before))}
            row = {"step": step.id, "local": a, "s3": b, "requests": served,
                   "local_read_mb_s": a["bytes_read"] / 1e6 / a["seconds"] if a["seconds"] else None,
                   "s3_read_mb_s": b["bytes_read"] / 1e6 / b["seconds"] if b["seconds"] else None}
            rows.append(row)

            def rate(x: float | None) -> str:
                return f"{x:.1f}" if x is not None else "-"

            print(f"{step.id:34} {a['seconds']:8.2f} {b['seconds']:8.2f} {b['bytes_read'] / 1e6:8.1f} "
                  f"{rate(row['local_read_mb_s']):>10} {rate(row['s3_read_mb_s']):>8} {b['objects_read']:7d} "
                  f"{served.get('GET', 0):5d} {served.get('PUT', 0):5d} {served.get('POST', 0):5d} "
                  f"{served.get('DELETE', 0):4d}", flush=True)
        same = published(pafs.LocalFileSystem(), str(local_out)) == published(fs, f"{bucket}/out")
        totals = {side: {k: sum(r[side][k] for r in rows) for k in ("seconds", "cpu_seconds", "bytes_read",
                                                                     "objects_read")} for side in ("local", "s3")}
        print(f"total: local {totals['local']['seconds']:.1f} s, s3 {totals['s3']['seconds']:.1f} s "
              f"({totals['s3']['seconds'] / totals['local']['seconds']:.2f}x); published outputs identical: {same}")
        result = {
            "date": today, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "docs": args.docs, "input_files": len(files), "input_bytes": input_bytes,
            "corpus": manifest.get("stats"), "stages": stages, "store": "SeaweedFS on loopback (tests/s3/server.py)",
            "identical_output": same, "steps": rows, "totals": totals,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {target}")
        return 0 if same else 1
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
