"""Multiple-choice tasks from local files, scored by likelihood (no generation).

A task is a JSONL file, one item per line: `{"context": str, "choices": [str, ...], "answer": int}`.
Each choice is scored as the log-likelihood of its tokens after the context (the context starts
after an EOS, as a training document does). Reported, as DataDecide and OLMES do at small scale:

- `acc`: the choice with the highest summed log-likelihood is the answer;
- `acc_norm`: the same, the log-likelihood divided by the choice's length in UTF-8 bytes
  (lm-evaluation-harness `acc_norm`, OLMES' per-character normalisation);
- `correct_logprob_per_byte`: the mean of the correct choice's log-likelihood per byte, a
  continuous metric that separates small models before their accuracy leaves chance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.errors import InputDataError
from curation.evaluate.data import Tokenizer


@dataclass(frozen=True)
class ChoiceItem:
    context: str
    choices: list[str]
    answer: int


def load_task(path: str | Path) -> list[ChoiceItem]:
    items = []
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"task {path}: no such file")
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            item = ChoiceItem(str(obj["context"]), [str(c) for c in obj["choices"]], int(obj["answer"]))
        except (ValueError, KeyError, TypeError) as err:
            raise InputDataError(f"task {path} line {n}: expected {{context, choices, answer}} ({err})") from None
        if len(item.choices) < 2 or not 0 <= item.answer < len(item.choices):
            raise InputDataError(f"task {path} line {n}: need >= 2 choices and 0 <= answer < {len(item.choices)}")
        items.append(item)
    if not items:
        raise InputDataError(f"task {path}: no items")
    return items


def _continuation(context: str, choice: str) -> str:
    return choice if not context or context[-1].isspace() or choice[:1].isspace() else " " + choice


def choice_logprobs(model: Any, tokenizer: Tokenizer, item: ChoiceItem, max_len: int, device: str) -> list[float]:
    """Summed log-likelihood of each choice's tokens given the context."""
    import torch

    ctx = [tokenizer.eos_id, *tokenizer.encode([item.context])[0]]
    conts = tokenizer.encode([_continuation(item.context, c) for c in item.choices])
    rows, spans = [], []
    for cont in conts:
        cont = cont[: max_len - 1] or [tokenizer.eos_id]
        seq = (ctx + cont)[-max_len:]
        spans.append(len(cont))
        rows.append(seq)
    width = max(map(len, rows))
    x = torch.full((len(rows), width), tokenizer.eos_id, dtype=torch.long)
    for i, seq in enumerate(rows):
        x[i, : len(seq)] = torch.tensor(seq)
    model.eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x.to(device)).logits.float(), dim=-1)
    model.train()
    out = []
    for i, (seq, k) in enumerate(zip(rows, spans, strict=True)):
        positions = torch.arange(len(seq) - k - 1, len(seq) - 1, device=logp.device)
        targets = torch.tensor(seq[len(seq) - k:], device=logp.device)
        out.append(float(logp[i, positions, targets].sum()))
    return out


def score_task(model: Any, tokenizer: Tokenizer, items: list[ChoiceItem], max_len: int, device: str) -> dict[str, float]:
    correct = correct_norm = 0
    per_byte = 0.0
    for item in items:
        lp = choice_logprobs(model, tokenizer, item, max_len, device)
        sizes = [max(1, len(_continuation(item.context, c).encode())) for c in item.choices]
        norm = [v / s for v, s in zip(lp, sizes, strict=True)]
        correct += int(max(range(len(lp)), key=lp.__getitem__) == item.answer)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == item.answer)
        per_byte += norm[item.answer]
    n = len(items)
    return {"items": n, "acc": correct / n, "acc_norm": correct_norm / n,
            "correct_logprob_per_byte": per_byte / n,
            "chance": sum(1 / len(i.choices) for i in items) / n}
