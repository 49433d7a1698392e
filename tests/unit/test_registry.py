"""The stage registry: one declaration per stage type, from which the spec, the CRD, the plan, the
runner and `thresher models` derive; adding a stage type touches no shared table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

from curation.crd import build_crd
from curation.registry import stage_defs
from curation.spec import STAGE_MODELS, StageType
from curation.stages import load_stage_class
from tests.helpers import make_spec, run_all, write_docs


def test_every_declared_stage_has_its_class_steps_model_and_crd_entry() -> None:
    crd_types = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["stages"]["items"]["properties"]["type"]["enum"]
    assert crd_types == [d.type for d in stage_defs()] == [t.value for t in StageType]
    assert [m.model_fields["type"].annotation.__args__[0].value for m in STAGE_MODELS] == crd_types
    for d in stage_defs():
        cls = load_stage_class(d.type)
        assert cls.type_name == d.type
        assert tuple(cls.steps) == tuple(s.name for s in d.steps), d.type
        for field, _role in d.roles:
            value = d.params.model_fields[field.split(".")[0]]
            assert value is not None, (d.type, field)


def test_declared_annotation_columns_are_the_ones_the_stages_write(tmp_path: Path) -> None:
    texts = [f"document number {i % 5} talks about rivers and long roads, again and again" for i in range(40)]
    inp = write_docs(tmp_path / "in", texts)
    stages = [{"type": "exact-dedup"}, {"type": "minhash-dedup"}, {"type": "curriculum"}]
    run_all(make_spec(inp, tmp_path / "out", stages))
    work = tmp_path / "out" / "_work"
    for i, d in enumerate((stage_defs()[0], stage_defs()[1], next(s for s in stage_defs() if s.type == "curriculum")),
                          start=1):
        written = set(pq.read_schema(next((work / f"{i:02d}-{d.type}" / "decisions").glob("*.parquet"))).names)
        declared = {name for name, _ in d.produces or ()}
        assert written - {"_row", "reason"} == declared, d.type


DECLARATION = '''
"""The toy stage type's parameters and declaration (pydantic only: the spec and operator load it)."""
from curation.params.base import CamelModel, StageDef, StepDef, StepKind


class ShoutParams(CamelModel):
    min_chars: int = 3
    """Documents shorter than this are rejected as `shout:short`."""


STAGE = StageDef(type="shout", order=99, params=ShoutParams, title="a toy stage",
                 steps=(StepDef("filter", StepKind.MAP),), impl="toy_shout_code:ShoutStage", produces=())
'''

CODE = '''
"""The toy stage type's step code (imported only when a step runs)."""
from __future__ import annotations

from typing import Any

from curation.stages.base import Stage, StepContext


class ShoutStage(Stage):
    type_name = "shout"
    steps = ("filter",)

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, ["text"])
            reasons = [None if len(t) >= self.params.min_chars else "shout:short"
                       for t in table.column("text").to_pylist()]
            return self.write_split(ctx, shard, table.drop_columns(["text"]), reasons)

        return self.map_shards(ctx, rank, world_size, split).to_dict()
'''

DRIVER = '''
import json, sys
sys.path.insert(0, sys.argv[1] + "/code")
import curation.params
curation.params.__path__.append(sys.argv[1] + "/params")
from curation.crd import build_crd
from curation.plan import plan_steps
from tests.helpers import make_spec, output_rows, run_all, write_docs
from pathlib import Path
tmp = Path(sys.argv[2])
inp = write_docs(tmp / "in", ["a", "long enough", "ok!", "no"])
spec = make_spec(inp, tmp / "out", [{"type": "shout", "params": {"minChars": 3}}])
run_all(spec)
enum = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
    "stages"]["items"]["properties"]["type"]["enum"]
print(json.dumps({"steps": [s.id for s in plan_steps(spec)], "kept": sorted(r["doc_id"] for r in output_rows(tmp / "out")),
                  "rejected": sorted((r["doc_id"], r["reason"]) for r in output_rows(tmp / "out", "rejected")),
                  "in_crd": "shout" in enum}))
'''


def test_adding_a_stage_type_is_its_declaration_and_its_code_module(tmp_path: Path) -> None:
    """A declaration module under curation/params (here: a folder appended to the package's path)
    and its code module are all it takes, no shared table edited: the spec accepts the type, the
    plan has its steps, the runner runs it, the CRD lists it."""
    extra = tmp_path / "extra"
    (extra / "params").mkdir(parents=True)
    (extra / "code").mkdir()
    (extra / "params" / "toy_shout.py").write_text(textwrap.dedent(DECLARATION))
    (extra / "code" / "toy_shout_code.py").write_text(textwrap.dedent(CODE))
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", DRIVER, str(extra), str(tmp_path)], capture_output=True, text=True,
                         cwd=root, check=False)
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "shout.filter" in result["steps"]
    assert result["kept"] == ["d00001", "d00002"]
    assert result["rejected"] == [["d00000", "shout:short"], ["d00003", "shout:short"]]
    assert result["in_crd"]
