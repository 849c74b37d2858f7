"""The benchmark harness's judgement: intervals, verdicts, merged results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _comparison import _difference, load_results, summarise, verdict  # noqa: E402


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "expected"),
    [
        (0.1, 0.3, True, "cellvi better"),
        (-0.3, -0.1, True, "cellvi worse"),
        (-0.1, 0.2, True, "within noise"),
        (-3.0, -1.0, False, "cellvi better"),
        (1.0, 3.0, False, "cellvi worse"),
        (np.nan, np.nan, True, "n/a"),
    ],
)
def test_verdict_reads_the_interval_in_the_metric_direction(low, high, higher_is_better, expected):
    assert verdict(low, high, higher_is_better) == expected


def test_difference_pairs_by_seed_when_every_seed_has_both_libraries():
    cellvi = {0: 1.0, 1: 2.0, 2: 3.5, 3: 3.0}
    reference = {0: 0.5, 1: 2.5, 2: 3.0, 3: 2.0}
    mean, low, high, kind = _difference(cellvi, reference)
    differences = np.array([0.5, -0.5, 0.5, 1.0])
    expected = stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences))
    assert kind == "paired"
    assert mean == pytest.approx(differences.mean())
    assert (low, high) == pytest.approx(expected)


def test_difference_falls_back_to_welch_when_seeds_differ():
    mean, low, high, kind = _difference({0: 1.0, 1: 2.0, 2: 3.0}, {5: 0.0, 6: 1.0})
    assert kind == "Welch"
    assert mean == pytest.approx(1.5)
    assert low < mean < high


def _runs(metric: str, cellvi: list[float], reference: list[float]) -> list[dict]:
    return [
        {"library": library, "dataset": "kang", "seed": seed, metric: value}
        for library, values in (("cellvi", cellvi), ("scvi-tools", reference))
        for seed, value in enumerate(values)
    ]


def test_summarise_says_worse_only_when_the_whole_interval_is_worse():
    worse = summarise(_runs("ilisi_knn", [0.70, 0.71, 0.69, 0.72], [0.80, 0.82, 0.79, 0.81]))
    assert "cellvi worse" in worse
    noisy = summarise(_runs("ilisi_knn", [0.70, 0.85, 0.78, 0.74], [0.80, 0.72, 0.83, 0.76]))
    assert "within noise" in noisy and "worse" not in noisy
    faster = summarise(_runs("train_seconds", [40.0, 42.0, 41.0], [80.0, 85.0, 79.0]))
    assert "cellvi better" in faster


def test_load_results_merges_files_and_counts_a_run_once(tmp_path):
    first = _runs("ilisi_knn", [0.7, 0.8], [0.75, 0.85])
    rerun = [
        {**first[0], "ilisi_knn": 0.9},
        {"library": "cellvi", "dataset": "kang", "seed": 7, "ilisi_knn": 0.6},
    ]
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(rerun))
    merged = load_results([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(merged) == 5
    assert {r["ilisi_knn"] for r in merged if r["library"] == "cellvi" and r["seed"] == 0} == {0.9}
