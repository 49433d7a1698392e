"""`spec.evaluate`: the proxy-model evaluation as the pipeline's last step (planning and checks;
the run itself is in tests/model/test_evaluate_step.py)."""

from __future__ import annotations

import pytest

from curation.errors import SpecError
from curation.executor import with_paths
from curation.plan import data_fingerprint, plan_steps
from curation.spec import parse_spec

BASE = {"input": {"path": "in", "idField": "doc_id"}, "output": {"path": "out"}, "stages": [{"type": "exact-dedup"}]}


def test_evaluation_is_one_global_step_after_the_summary_and_leaves_the_data_fingerprint() -> None:
    spec = parse_spec({**BASE, "evaluate": {"evalSet": "heldout", "gpus": 2}, "parallelism": 3})
    last = plan_steps(spec)[-1]
    assert (last.id, last.kind.value, last.world_size, last.gpus) == ("evaluate.run", "global", 1, 2)
    assert data_fingerprint(spec) == data_fingerprint(parse_spec({**BASE, "parallelism": 3}))
    assert with_paths(spec, None, None, "/mnt/in/heldout").evaluate.eval_set == "/mnt/in/heldout"


@pytest.mark.parametrize(("change", "message"), [
    ({"evaluate": {"evalSet": "s3://b/heldout"}, "storage": {"s3": {}}}, "does not read s3:// yet"),
    ({"evaluate": {"evalSet": "heldout"}, "input": {"path": "in", "format": "jsonl"}}, "must be Parquet"),
    ({"evaluate": {"evalSet": "heldout", "preset": "huge"}}, "preset"),
    ({"evaluate": {"evalSet": "heldout", "seeds": []}}, "seeds"),
])
def test_an_evaluation_the_step_cannot_run_is_refused_in_the_spec(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **change})
