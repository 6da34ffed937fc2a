"""Studies: documented columns, equal-budget controls, reproducibility, SQLite / Parquet output, invariants."""

import sqlite3

import numpy as np
import pandas as pd
import pytest

import omni_lab as ol
from omni_lab.media import VideoClip
from omni_lab.studies.sweep import COLUMNS
from tests import synth

TIMING = ["encode_s", "reduce_s", "prefill_s"]


def video_prompt(lab, frames=8, reference=None):
    clip = VideoClip(synth.moving_square_frames(frames, 64, 64), fps=4.0)
    return lab.prompt(
        "Which way does the square move?", video=clip, audio=(synth.tone(0.5), 16000), reference=reference
    )


def test_sweep_columns_controls_and_reproducibility(toy_lab, tmp_path):
    prompts = [video_prompt(toy_lab, reference="left"), (video_prompt(toy_lab, frames=6), "right")]
    reducers, rates = [ol.reducers.EVS], [0.5, 0.75]
    first = ol.studies.sweep(
        toy_lab, prompts, reducers, rates, max_new_tokens=2, progress_bar=False, out=tmp_path / "sweep.parquet"
    )
    assert list(first.columns) == COLUMNS
    assert len(first) == len(prompts) * (1 + 2 * len(reducers) * len(rates))
    baseline = first[first.reducer == "none"]
    assert (baseline.kl_first_token.abs() < 1e-9).all() and baseline.top1_agreement.all()
    assert set(baseline.reference) == {"left", "right"} and baseline.correct.notna().all()
    for (prompt, _rate), group in first[first.reducer != "none"].groupby(["prompt", "rate"]):
        reducer_row = group[group.control_for.isna()].iloc[0]
        control_row = group[group.control_for.notna()].iloc[0]
        assert control_row.control_for == reducer_row.reducer
        assert (
            control_row.kept_video
            == reducer_row.kept_video
            < baseline.loc[baseline.prompt == prompt].iloc[0].kept_video
        )
        assert "RandomDrop" in control_row.reducer
    second = ol.studies.sweep(
        toy_lab, prompts, reducers, rates, max_new_tokens=2, progress_bar=False, out=tmp_path / "sweep.sqlite"
    )
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), second.drop(columns=TIMING))
    parquet = pd.read_parquet(tmp_path / "sweep.parquet")
    with sqlite3.connect(tmp_path / "sweep.sqlite") as connection:
        stored = pd.read_sql("select * from sweep", connection)
    assert len(parquet) == len(stored) == len(first) and list(stored.columns) == COLUMNS


def test_reinsertion_groups_and_full_restoration(toy_lab):
    prompt = video_prompt(toy_lab, frames=8)
    reducer = ol.reducers.EVS(0.75)
    by_frame = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="frame", progress_bar=False)
    reduced = toy_lab.run(prompt, max_new_tokens=1, reducer=reducer)
    pruned = reduced.token_map.df[(reduced.token_map.df.modality == "video") & ~reduced.token_map.df.kept]
    groups = by_frame.iloc[2:]
    assert len(groups) == pruned.tubelet.nunique() and groups.tokens_restored.sum() == len(pruned)
    everything = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="topk", k=10_000, progress_bar=False)
    unreduced, restored = everything.iloc[0], everything.iloc[2]
    assert restored.tokens_restored == len(pruned)
    assert restored.margin == pytest.approx(unreduced.margin, abs=1e-5)  # all back = the unreduced run
    assert restored.recovered == pytest.approx(1.0, abs=1e-3) or abs(unreduced.delta_margin) < 1e-6
    regions = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="region", progress_bar=False)
    assert regions.iloc[2:].tokens_restored.sum() == len(pruned)


def test_pruned_contribution_rows_and_summary(toy_lab):
    prompt = video_prompt(toy_lab, frames=6)
    frame = ol.studies.pruned_contribution(toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=1000, progress_bar=False)
    summary = frame.attrs["summary"]
    video_tokens = prompt.token_map.counts()["video"]
    assert len(frame) == video_tokens == summary["dropped"] + summary["kept"]
    assert frame.dropped.sum() == summary["dropped"] and (frame.effect >= 0).all() and (frame.kl >= -1e-9).all()
    assert -1 <= summary["spearman"] <= 1 and summary["dropped_set_effect"] >= 0
    assert (frame[frame.tubelet == 0].dropped == False).all()  # noqa: E712 - EVS keeps the first tubelet
    sampled = ol.studies.pruned_contribution(
        toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=10, seed=3, progress_bar=False
    )
    again = ol.studies.pruned_contribution(
        toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=10, seed=3, progress_bar=False
    )
    assert len(sampled) == 10 and sampled.row.tolist() == again.row.tolist()


def test_routing_shift_is_zero_without_reduction_and_counts_survivors(toy_lab):
    prompt = video_prompt(toy_lab, frames=8)
    none = ol.studies.routing_shift(toy_lab, prompt, None)
    assert (none.changed == 0).all()
    shifted = ol.studies.routing_shift(toy_lab, prompt, ol.reducers.EVS(0.75))
    survivors = toy_lab.run(prompt, max_new_tokens=0, reducer=ol.reducers.EVS(0.75)).token_map.num_positions
    assert (shifted[shifted.modality == "all"].compared == survivors).all()
    assert set(shifted.modality) == {"all", "text", "video", "audio"}


def test_expert_specialization_pools_prompts(toy_lab):
    prompts = [video_prompt(toy_lab, frames=4), toy_lab.prompt("Count to three.")]
    load = ol.studies.expert_specialization(toy_lab, prompts, reducer=None, top=3, progress_bar=False)
    top_k = toy_lab.config.text_config.num_experts_per_tok
    layer = load.layer.min()
    fed = sum(p.token_map.counts().get("text", 0) for p in prompts)
    assert load[(load.layer == layer) & (load.modality == "text")]["count"].sum() == fed * top_k
    entropy = load.attrs["entropy"]
    assert ((entropy.entropy_bits >= 0) & (entropy.entropy_bits <= np.log2(8) + 1e-9)).all()
    top = load.attrs["top_tokens"]
    assert top.groupby(["layer", "expert"]).size().max() <= 3
    assert {"modality", "text", "weight", "x0", "t0"} <= set(top.columns)
