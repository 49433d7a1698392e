"""`thresher holdout` and the overlap checks of `thresher eval`: no evaluation document, nor a
copy of one, may reach an arm's training data. Also the statistics, presets and the SVG plot."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.evaluate.data import DatasetRef
from curation.evaluate.holdout import split_holdout
from curation.evaluate.html import loss_svg
from curation.evaluate.overlap import OverlapError, check_disjoint
from curation.evaluate.presets import PRESETS, estimate_cost, parameter_count
from curation.evaluate.stats import paired_difference
from tests.helpers import write_docs

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "river", "mountain", "forest", "valley", "ocean", "desert"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(40)) + f" doc{i}" for i in range(n)]


def ids_of(folder: Path) -> list[str]:
    files = sorted(folder.glob("*.parquet"))
    return [i for f in files for i in pq.read_table(f).column("doc_id").to_pylist()]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_holdout_is_deterministic_complete_and_leaves_the_input_alone(tmp_path: Path) -> None:
    inp = write_docs(tmp_path / "in", corpus(400), shards=3)
    before = digest(inp)
    a = split_holdout(str(inp), tmp_path / "a", fraction=0.2, id_field="doc_id")
    split_holdout(str(inp), tmp_path / "b", fraction=0.2, id_field="doc_id")
    assert digest(inp) == before
    assert ids_of(tmp_path / "a" / "heldout") == ids_of(tmp_path / "b" / "heldout")
    assert 40 <= a.heldout <= 120
    every = ids_of(tmp_path / "a" / "train") + ids_of(tmp_path / "a" / "heldout") + ids_of(tmp_path / "a" / "overlap")
    assert sorted(every) == sorted(f"d{i:05d}" for i in range(400))
    assert a.train + a.heldout + a.overlap == 400
    assert json.loads((tmp_path / "a" / "holdout.json").read_text())["heldout"] == a.heldout
    other = split_holdout(str(inp), tmp_path / "c", fraction=0.2, seed=7, id_field="doc_id")
    assert ids_of(tmp_path / "c" / "heldout") != ids_of(tmp_path / "a" / "heldout")
    assert other.documents == 400


def test_holdout_moves_near_copies_of_heldout_documents_out_of_train(tmp_path: Path) -> None:
    texts = corpus(300)
    probe = split_holdout(str(write_docs(tmp_path / "probe", texts)), tmp_path / "p", fraction=0.2, id_field="doc_id")
    held_id = ids_of(tmp_path / "p" / "heldout")[0]
    original = texts[int(held_id[1:])]
    near = original.replace(original.split()[3], "CHANGED", 1)  # a near duplicate, under another id
    inp = write_docs(tmp_path / "in", [*texts, near], ids=[f"d{i:05d}" for i in range(300)] + ["copy"])
    r = split_holdout(str(inp), tmp_path / "s", fraction=0.2, id_field="doc_id")
    if "copy" in ids_of(tmp_path / "s" / "heldout"):
        pytest.skip("the copy's own id hash put it in the held-out side")
    assert "copy" in ids_of(tmp_path / "s" / "overlap") and "copy" not in ids_of(tmp_path / "s" / "train")
    moved = pq.read_table(tmp_path / "s" / "overlap").to_pylist()
    assert {"doc_id": "copy", "overlaps_heldout": held_id}.items() <= next(m for m in moved if m["doc_id"] == "copy").items()
    assert r.overlap >= 1 and probe.heldout == r.heldout
    check_disjoint([DatasetRef("train", str(tmp_path / "s" / "train"), id_field="doc_id")],
                   [DatasetRef("heldout", str(tmp_path / "s" / "heldout"), id_field="doc_id")])


def test_overlap_by_id_is_refused_with_the_count_and_an_example(tmp_path: Path) -> None:
    texts = corpus(20)
    train = write_docs(tmp_path / "train", texts)
    ev = write_docs(tmp_path / "eval", corpus(3, seed=9), ids=["d00004", "e1", "e2"])
    with pytest.raises(OverlapError) as err:
        check_disjoint([DatasetRef("raw", str(train), id_field="doc_id")], [DatasetRef("ev", str(ev), id_field="doc_id")])
    assert "dataset raw shares 1 document id(s)" in err.value.message and "d00004 (in ev)" in err.value.message


def test_overlap_by_ngram_is_refused_even_under_new_ids(tmp_path: Path) -> None:
    texts = corpus(20)
    ev_texts = corpus(2, seed=5)
    leaked = "Intro words here. " + ev_texts[1][:200] + " and a different ending"
    train = write_docs(tmp_path / "train", [*texts, leaked], ids=[f"t{i}" for i in range(21)])
    ev = write_docs(tmp_path / "eval", ev_texts, ids=["e0", "e1"])
    with pytest.raises(OverlapError) as err:
        check_disjoint([DatasetRef("curated", str(train), id_field="doc_id")],
                       [DatasetRef("ev", str(ev), id_field="doc_id")])
    msg = err.value.message
    assert "dataset curated has 1 document(s) sharing >= 1 word 13-gram(s)" in msg
    assert "curated t20 and ev e1" in msg
    report = check_disjoint([DatasetRef("x", str(write_docs(tmp_path / "clean", texts)), id_field="doc_id")],
                            [DatasetRef("ev", str(ev), id_field="doc_id")])
    assert report.checked == {"x": 20} and report.eval_documents == 2


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_docs(tmp_path / "train", corpus(10))
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{path: {train}, idField: doc_id}}\noutput: {{path: {tmp_path / 'never-run'}}}\n"
                   "stages: [{type: heuristic-filter}]\n")
    cases = [
        (["eval", "--job", str(job), "--eval-set", str(train)], "run `thresher run"),
        (["eval", "--dataset", f"raw={train}", "--eval-set", str(train), "--out", str(tmp_path / "o")],
         "compares two or more datasets"),
        (["eval", "--dataset", f"a={train}", "--dataset", f"b={train}", "--eval-set", str(train), "--id-field",
          "doc_id", "--out", str(tmp_path / "o")], "shares 10 document id(s)"),
        (["eval", "--dataset", str(train), "--out", str(tmp_path / "o")], "write NAME=PATH"),
        (["eval", "--dataset", f"a={train}", "--dataset", f"b={tmp_path / 'nope'}", "--eval-set", str(train),
          "--out", str(tmp_path / "o")], "no such dataset folder"),
        (["eval", "--preset", "huge", "--out", "x"], "unknown preset 'huge'"),
        (["eval", "--job", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["holdout", str(train), "--out", str(train / "inside")], "never inside it"),
        (["holdout", str(train), "--out", str(tmp_path / "h"), "--fraction", "1.5"], "between 0 and 1"),
    ]
    for argv, expected in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err, (argv, err)
        assert "Traceback" not in err


def test_paired_difference_uses_a_t_interval_over_seeds() -> None:
    d = paired_difference([4.9, 5.0, 5.2], [5.0, 5.2, 5.3])
    diffs = [-0.1, -0.2, -0.1]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert d["mean"] == pytest.approx(mean) and d["wins"] == 3
    assert d["ci95"] == pytest.approx([mean - half, mean + half])
    assert paired_difference([1.0], [2.0])["ci95"] is None


def test_presets_document_parameters_tokens_and_cost() -> None:
    tiny, proxy = PRESETS["tiny"], PRESETS["proxy-150m"]
    assert tiny.budget == tiny.steps * tiny.batch * tiny.seq_len
    assert 140e6 < parameter_count(proxy, 49152) < 160e6
    cost = estimate_cost(proxy, 49152)
    assert 19 < cost["tokens_per_parameter"] < 21
    assert cost["gpu_hours_per_arm_seed"] == pytest.approx(cost["train_flops_6nd"] / (0.4 * 989e12) / 3600)
    assert 1.5 < cost["gpu_hours_per_arm_seed"] < 2.5


def test_loss_plot_is_an_svg_with_one_curve_per_arm() -> None:
    curves = {arm: {"tokens": [10, 20, 30], "mean": [5.0, 4.5, 4.2], "min": [4.9, 4.4, 4.1], "max": [5.1, 4.6, 4.3]}
              for arm in ("raw", "curated", "third")}
    svg = loss_svg("heldout", curves)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("class='curve'") == 3 and "data-arm='curated'" in svg
    assert "<script" not in svg and "http://www.w3.org/2000/svg" in svg
