"""Where a run keeps its files, below the output folder.

    <output>/data/             curated dataset (+ _manifest.json)
    <output>/rejected/         rejected documents with `stage` and `reason`
    <output>/summary.json      per-stage statistics and the conservation result
    <output>/report.html       human report
    <output>/tokens/           with output.tokenize: merged Megatron/NumPy token files + _manifest.json
    <output>/_work/spec.json   fingerprint of the spec that owns this folder
    <output>/_work/corpus/     canonical shards (the corpus text, written once) + _index.json
    <output>/_work/NN-<stage>/decisions/part-NNNNN.parquet   what the stage decided per shard
    <output>/_work/NN-<stage>/synthetic/part-NNNNN.parquet   documents the stage created (rephrase)
    <output>/_work/NN-<stage>/scratch/                       intermediate files of its steps
    <output>/_work/_done/<step>/rank-i-of-n.json   completion markers
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.corpus import Corpus, StageFiles
from curation.dataset import Location, ShardedDataset
from curation.plan import stage_dir_name


@dataclass(frozen=True)
class RunLayout:
    root: Location

    @classmethod
    def of(cls, output_path: str) -> RunLayout:
        return cls(Location.of(output_path))

    @property
    def work(self) -> Location:
        return self.root.join("_work")

    @property
    def data(self) -> ShardedDataset:
        return ShardedDataset(self.root.join("data"))

    @property
    def rejected(self) -> ShardedDataset:
        return ShardedDataset(self.root.join("rejected"))

    @property
    def summary(self) -> Location:
        return self.root.join("summary.json")

    @property
    def report(self) -> Location:
        return self.root.join("report.html")

    @property
    def fingerprint(self) -> Location:
        return self.work.join("spec.json")

    @property
    def timings(self) -> Location:
        return self.work.join("_timings")

    def stage_root(self, index: int, name: str) -> Location:
        return self.work.join(stage_dir_name(index, name))

    @property
    def corpus(self) -> Corpus:
        return Corpus(self.work.join("corpus"))

    def stage_files(self, index: int, name: str) -> StageFiles:
        return StageFiles(self.stage_root(index, name))

    def stage_scratch(self, index: int, name: str) -> Location:
        return self.stage_root(index, name).join("scratch")
