from __future__ import annotations

import pytest

from curation.conservation import check_conservation
from curation.errors import ConservationError


def test_conservation_holds_when_every_id_is_kept_or_rejected_once() -> None:
    report = check_conservation(["a", "b", "c"], ["a"], ["b", "c"], synthetic_sources=["a"])
    assert report.to_dict()["holds"] and report.synthetic_docs == 1


def test_conservation_fails_on_a_lost_id() -> None:
    with pytest.raises(ConservationError, match="1 input ids are in neither output nor rejected: c"):
        check_conservation(["a", "b", "c"], ["a"], ["b"])


def test_conservation_fails_on_an_id_both_kept_and_rejected() -> None:
    with pytest.raises(ConservationError, match="both kept and rejected: b"):
        check_conservation(["a", "b"], ["a", "b"], ["b"])


def test_conservation_fails_on_duplicated_output_and_unknown_ids() -> None:
    with pytest.raises(ConservationError, match="more than once: a.*not in the input"):
        check_conservation(["a"], ["a", "a", "z"], [])


def test_conservation_fails_on_synthetic_rows_without_a_source() -> None:
    with pytest.raises(ConservationError, match="unknown sources: nope"):
        check_conservation(["a"], ["a"], [], synthetic_sources=["nope"])
