"""`ol.studies.matched_ablation`: its statistics are scipy's own (recomputed here from the rows), and a run on the toy
twin gives matched arms: every prompt in every arm, equal-budget random controls, agreement with the unreduced run."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.studies.matched import COLUMNS, MatchedAblation

ARMS = ["none", "EVS 0.7", "random for EVS 0.7"]


def _rows() -> pd.DataFrame:
    """A hand-made table: 8 prompts, the reducer loses 3 answers, its control 5."""
    correct = {
        "none": [1, 1, 1, 1, 1, 1, 1, 0],
        "EVS 0.7": [1, 0, 1, 1, 0, 1, 0, 0],
        "random for EVS 0.7": [0] * 3 + [1] * 2 + [0] * 3,
    }
    ttft = {
        "none": np.linspace(1.0, 1.7, 8),
        "EVS 0.7": np.linspace(0.6, 1.3, 8),
        "random for EVS 0.7": np.linspace(0.55, 1.2, 8),
    }
    records = []
    for arm in ARMS:
        for prompt in range(8):
            records.append(
                {column: None for column in COLUMNS}
                | {
                    "prompt": prompt,
                    "prompt_key": str(prompt),
                    "arm": arm,
                    "control_for": "EVS 0.7" if arm.startswith("random") else None,
                    "kept_tokens": 100 if arm == "none" else 40,
                    "correct": bool(correct[arm][prompt]),
                    "margin_change": 0.0 if arm == "none" else -0.5 * prompt,
                    "same_answer": correct[arm][prompt] == correct["none"][prompt],
                    "kl_first_token": 0.0,
                    "ttft_s": ttft[arm][prompt],
                    "prefill_s": ttft[arm][prompt] / 2,
                }
            )
    return pd.DataFrame(records).astype({"correct": "boolean"})


def test_statistics_are_scipys_own():
    result = MatchedAblation(_rows(), ARMS, seed=3)
    accuracy = result.accuracy()
    for arm, k in (("none", 7), ("EVS 0.7", 4), ("random for EVS 0.7", 2)):
        expected = stats.binomtest(k, 8).proportion_ci(confidence_level=0.95, method="wilson")
        assert accuracy.loc[arm, "correct"] == k
        assert accuracy.loc[arm, ["low", "high"]].tolist() == pytest.approx([expected.low, expected.high])
    differences = result.differences()
    rows = _rows().pivot(index="prompt", columns="arm", values="correct").astype(float)

    def bootstrap(statistic, *samples):
        interval = stats.bootstrap(samples, statistic, paired=True, vectorized=False, n_resamples=2000,
                                   confidence_level=0.95, method="percentile",
                                   random_state=np.random.default_rng(3)).confidence_interval  # fmt: skip
        return float(statistic(*samples)), interval.low, interval.high

    difference = bootstrap(lambda a, b: np.mean(a - b), rows["EVS 0.7"].to_numpy(), rows["none"].to_numpy())
    assert differences.loc["EVS 0.7", "accuracy_vs_none"] == pytest.approx(difference)
    assert difference[0] == pytest.approx(-3 / 8) and difference[2] < 0  # a loss whose interval excludes 0
    versus = bootstrap(lambda a, b: np.mean(a - b), rows["EVS 0.7"].to_numpy(), rows["random for EVS 0.7"].to_numpy())
    assert differences.loc["EVS 0.7", "accuracy_vs_random"] == pytest.approx(versus)
    ttft = _rows().pivot(index="prompt", columns="arm", values="ttft_s")
    ratio = bootstrap(lambda a, b: np.mean(a) / np.mean(b), ttft["EVS 0.7"].to_numpy(), ttft["none"].to_numpy())
    assert differences.loc["EVS 0.7", "ttft_ratio"] == pytest.approx(ratio)
    shift = differences.loc["EVS 0.7", "margin_shift"]
    assert shift[0] == pytest.approx(-0.5 * np.arange(8).mean())
    table = result.summary()
    assert list(table.index) == ARMS and table.loc["EVS 0.7", "accuracy %"].startswith("50.0 [")
    assert table.loc["EVS 0.7", "Δ vs none (pts)"].startswith("-37.5 [")
    figure = result.figure()
    assert [trace.type for trace in figure.data] == ["bar", "bar"] and list(figure.data[0].x) == ARMS


def test_the_twin_in_matched_arms(twin_lab, tmp_path):
    data = ol.studies.Dataset.shapesworld(4, families=["video", "omni"], seed=4)
    options = ol.RunOptions(max_new_tokens=4)
    result = ol.studies.matched_ablation(
        twin_lab, data, ["evs"], rates=[0.7], options=options, repeats=2, progress=False, out=tmp_path / "m.sqlite"
    )
    rows = result.rows
    assert result.arms == ARMS and len(rows) == 4 * 3 and (rows.repeats == 2).all()
    assert set(rows.groupby("prompt").arm.apply(tuple)) == {tuple(ARMS)}  # every prompt in every arm
    table = rows.pivot(index="prompt", columns="arm", values="kept_tokens")
    assert (table["EVS 0.7"] == table["random for EVS 0.7"]).all()  # the control keeps exactly the budget
    assert (table["EVS 0.7"] < table["none"]).all()
    none = rows[rows.arm == "none"]
    assert none.same_answer.all() and (none.kl_first_token.abs() < 1e-9).all() and (none.margin_change == 0).all()
    assert rows.correct.notna().all() and (rows.ttft_s > rows.prefill_s).all()
    again = ol.studies.matched_ablation(
        twin_lab, data, ["evs"], rates=[0.7], options=options, repeats=2, progress=False, out=tmp_path / "m.sqlite"
    )  # read back: nothing recomputed, the same table
    columns = ["prompt", "arm", "answer", "correct", "kept_tokens"]
    pd.testing.assert_frame_equal(again.rows[columns], rows[columns])


def test_bad_arguments_name_the_fix(twin_lab):
    data = ol.studies.Dataset.shapesworld(2, families=["video"])
    with pytest.raises(OmniLabInputError, match="needs rates"):
        ol.studies.matched_ablation(twin_lab, data, ["evs"])
    with pytest.raises(OmniLabInputError, match="decoding only"):
        ol.studies.matched_ablation(twin_lab, data, [ol.reducers.EVS(0.5)], options=ol.RunOptions(reducer=None))
    with pytest.raises(OmniLabInputError, match="inside the LLM"):
        ol.studies.matched_ablation(twin_lab, data, [ol.reducers.FastV(layer=3, rate=0.5)])
    with pytest.raises(OmniLabInputError, match="many prompts"):
        ol.studies.matched_ablation(twin_lab, "one prompt", [ol.reducers.EVS(0.5)])
