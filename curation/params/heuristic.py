"""Parameters of the heuristic quality filter (Gopher, C4, FineWeb rules).

(Initial outline; each rule family gets its typed thresholds.)
"""

from __future__ import annotations

from curation.params.base import CamelModel


class HeuristicFilterParams(CamelModel):
    """Rule-based quality filter; each rejection carries the failing rule's name as reason."""

    gopher_quality: bool = True
    gopher_repetition: bool = True
    c4: bool = True
    fineweb: bool = True
