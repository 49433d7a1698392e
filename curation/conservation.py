"""The conservation invariant: every input id ends up exactly once in the output or in `rejected/`.

Synthetic rows (from rephrasing) are the one exception: they carry `synthetic_source_id`,
which must name an input document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from curation.errors import ConservationError


@dataclass(frozen=True)
class ConservationReport:
    input_docs: int
    output_docs: int
    rejected_docs: int
    synthetic_docs: int

    def to_dict(self) -> dict[str, int | bool]:
        return {
            "holds": True,
            "input_docs": self.input_docs,
            "output_docs": self.output_docs,
            "rejected_docs": self.rejected_docs,
            "synthetic_docs": self.synthetic_docs,
        }


def _sample(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_conservation(
    input_ids: list[str],
    output_ids: list[str],
    rejected_ids: list[str],
    synthetic_sources: list[str] | None = None,
) -> ConservationReport:
    """Raise ConservationError unless input = output ∪ rejected, disjoint, each id exactly once.

    `output_ids` are the real (non-synthetic) output rows; `synthetic_sources` the source ids of
    synthetic rows, which must all be input ids."""
    problems: list[str] = []
    inputs = set(input_ids)
    if len(inputs) != len(input_ids):
        dup = [k for k, v in Counter(input_ids).items() if v > 1]
        problems.append(f"input ids repeated: {_sample(dup)}")
    out_counts = Counter(output_ids)
    rej_counts = Counter(rejected_ids)
    twice_out = [k for k, v in out_counts.items() if v > 1]
    if twice_out:
        problems.append(f"ids written to the output more than once: {_sample(twice_out)}")
    twice_rej = [k for k, v in rej_counts.items() if v > 1]
    if twice_rej:
        problems.append(f"ids rejected more than once: {_sample(twice_rej)}")
    both = out_counts.keys() & rej_counts.keys()
    if both:
        problems.append(f"ids both kept and rejected: {_sample(both)}")
    seen = out_counts.keys() | rej_counts.keys()
    lost = inputs - seen
    if lost:
        problems.append(f"{len(lost)} input ids are in neither output nor rejected: {_sample(lost)}")
    unknown = seen - inputs
    if unknown:
        problems.append(f"{len(unknown)} ids appear that were not in the input: {_sample(unknown)}")
    orphans = set(synthetic_sources or []) - inputs
    if orphans:
        problems.append(f"synthetic rows point to unknown sources: {_sample(orphans)}")
    if problems:
        raise ConservationError("conservation check failed: " + "; ".join(problems))
    return ConservationReport(len(inputs), len(output_ids), len(rejected_ids), len(synthetic_sources or []))
