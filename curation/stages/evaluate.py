"""The `evaluate.run` step (`spec.evaluate`): `thresher eval` on the job's input and its output.

One global rank, after finalize: trains the preset's proxy model on the input (`raw`) and on the
published `data/` (`curated`) for each seed, at equal tokens, scores the held-out `evalSet`, and
writes `<output>/eval/eval.json` and `eval.html` (curation/evaluate/run.py). In a cluster the step
gets `spec.evaluate.gpus` GPUs. Its stats carry the curated-minus-raw difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.stages.base import Stage, StageStats, StepContext


class EvaluateStage(Stage):
    type_name = "evaluate"
    steps = ("run",)

    def step_run(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.evaluate.data import DatasetRef
        from curation.evaluate.presets import get_preset
        from curation.evaluate.run import EvalConfig, evaluate

        spec = self.spec
        params = spec.evaluate
        assert params is not None  # planned only with spec.evaluate
        text, ids = spec.input.text_field, spec.input.id_field
        output = Path(spec.output.path)
        config = EvalConfig(
            arms=[DatasetRef("raw", spec.input.path, text, ids), DatasetRef("curated", str(output / "data"), text, ids)],
            eval_sets=[DatasetRef("heldout", params.eval_set, text, ids)],
            out=output / "eval", models=Path(spec.models.path),
            preset=get_preset(params.preset).with_overrides(tokens=params.tokens),
            seeds=list(params.seeds), tokenizer=params.tokenizer,
            device="cuda" if params.gpus else None)
        result = evaluate(config)
        stats = StageStats()
        diff = result.difference("heldout", "curated")
        stats.extra = {"evaluation": {"curated_minus_raw": diff, "json": str(result.json_path),
                                      "html": str(result.html_path)}}
        return stats.to_dict()
