"""Studies: documented columns, equal-budget controls, reproducibility, SQLite / Parquet output, typed results, and
effects checked against ablations and entropies computed by hand here."""

import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

import omni_lab as ol
from omni_lab import forward
from omni_lab.errors import OmniLabInputError
from omni_lab.media import VideoClip
from omni_lab.studies.sweep import COLUMNS, _make
from tests import synth

TIMING = ["encode_s", "reduce_s", "prefill_s"]


def video_prompt(lab, frames=8, reference=None):
    clip = VideoClip(synth.moving_square_frames(frames, 64, 64), fps=4.0)
    return lab.prompt(
        "Which way does the square move?", video=clip, audio=(synth.tone(0.5), 16000), reference=reference
    )


def test_sweep_columns_controls_and_reproducibility(toy_lab, tmp_path):
    paired = video_prompt(toy_lab, frames=6)
    prompts = [video_prompt(toy_lab, reference="left"), (paired, "right")]
    reducers, rates = [ol.reducers.EVS], [0.5, 0.75]
    first = ol.studies.sweep(
        toy_lab, prompts, reducers, rates, max_new_tokens=2, progress=False, out=tmp_path / "sweep.parquet"
    )
    assert paired.reference is None  # the pair's reference went to a copy, not into the caller's prompt
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
        toy_lab, prompts, reducers, rates, max_new_tokens=2, progress=False, out=tmp_path / "sweep.sqlite"
    )
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), second.drop(columns=TIMING))
    parquet = pd.read_parquet(tmp_path / "sweep.parquet")
    with sqlite3.connect(tmp_path / "sweep.sqlite") as connection:
        stored = pd.read_sql("select * from sweep", connection)
    assert len(parquet) == len(stored) == len(first) and list(stored.columns) == COLUMNS


def test_sweep_calls_factories_by_their_signature():
    assert repr(_make(ol.reducers.EVS, 0.5)) == "EVS(rate=0.5)"  # a class with a `rate` parameter
    assert repr(_make(lambda r: ol.reducers.DivPrune(r), 0.25)) == "DivPrune(rate=0.25)"  # positional only
    assert repr(_make(lambda *, rate: ol.reducers.ToMe(rate), 0.5)) == "ToMe(rate=0.5)"  # keyword only
    assert repr(_make(lambda **options: ol.reducers.EVS(**options), 0.7)) == "EVS(rate=0.7)"
    with pytest.raises(OmniLabInputError, match="ol.reducers.EVS"):
        _make(ol.reducers.EVS(0.5), 0.5)  # an instance, not a factory
    with pytest.raises(OmniLabInputError, match="cannot call"):
        _make(lambda: ol.reducers.EVS(0.5), 0.5)


def test_an_error_inside_a_reducer_factory_surfaces_once_and_before_any_run(toy_lab):
    calls = []

    def factory(rate):
        calls.append(rate)
        raise TypeError("this reducer does not take that argument")  # raised inside the factory, not by the call

    prompt = toy_lab.prompt("Count to three.")
    with pytest.raises(TypeError, match="does not take that argument") as caught:
        ol.studies.sweep(toy_lab, [prompt], [factory], [0.5], progress=False)
    assert calls == [0.5]  # called once: no retry with other arguments
    assert caught.value.__context__ is None  # not raised while handling another TypeError


def test_reinsertion_groups_and_full_restoration(toy_lab):
    prompt = video_prompt(toy_lab, frames=8)
    reducer = ol.reducers.EVS(0.75)
    by_tubelet = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="tubelet", progress=False)
    assert isinstance(by_tubelet, ol.studies.ReinsertionResult)
    reduced = toy_lab.run(prompt, max_new_tokens=1, reducer=reducer)
    df = reduced.token_map.df
    pruned = df[(df.modality == "video") & ~df.kept]
    groups = by_tubelet.groups.iloc[2:]
    assert len(groups) == pruned.tubelet.nunique() and groups.tokens_restored.sum() == len(pruned)
    for label, rows in by_tubelet.group_rows.items():  # each tubelet group holds the pruned tokens of one tubelet
        assert set(rows) <= set(pruned.index) and pruned.loc[rows].tubelet.nunique() == 1, label
    recovered = by_tubelet.row_scores("recovered")
    assert recovered.shape == (len(by_tubelet.token_map),)
    assert np.isfinite(recovered[pruned.index]).all() and np.isnan(np.delete(recovered, pruned.index)).all()
    assert by_tubelet.target_token == toy_lab.tokenizer.decode([by_tubelet.target])
    everything = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="topk", k=10_000, progress=False)
    unreduced, restored = everything.groups.iloc[0], everything.groups.iloc[2]
    assert restored.tokens_restored == len(pruned)
    assert restored.margin == pytest.approx(unreduced.margin, abs=1e-5)  # all back = the unreduced run
    assert restored.recovered == pytest.approx(1.0, abs=1e-3) or abs(unreduced.delta_margin) < 1e-6
    regions = ol.studies.reinsertion(toy_lab, prompt, reducer, groups="region", grid=2, progress=False)
    assert regions.groups.iloc[2:].tokens_restored.sum() == len(pruned)
    height, width = df[df.modality == "video"]["row"].max() + 1, df[df.modality == "video"]["col"].max() + 1
    for label, rows in regions.group_rows.items():  # "video 0 region r,c": cells in that quarter of the grid
        cell_row, cell_col = (int(value) for value in label.rsplit(" ", 1)[1].split(","))
        assert (df.loc[rows, "row"] * 2 // height == cell_row).all() and (
            df.loc[rows, "col"] * 2 // width == cell_col
        ).all()


def hand_margin(logits, target):
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return float(log_probs[target] - torch.cat([log_probs[:target], log_probs[target + 1 :]]).max())


def test_pruned_contribution_rows_summary_and_an_ablation_by_hand(toy_lab):
    prompt = video_prompt(toy_lab, frames=4)
    result = ol.studies.pruned_contribution(toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=1000, progress=False)
    frame = result.tokens
    video_tokens = prompt.token_map.counts()["video"]
    assert len(frame) == video_tokens == result.dropped + result.kept
    assert frame.dropped.sum() == result.dropped and (frame.effect >= 0).all() and (frame.kl >= -1e-9).all()
    assert -1 <= result.spearman <= 1 and result.dropped_set_effect >= 0
    assert (frame[frame.tubelet == 0].dropped == False).all()  # noqa: E712 - EVS keeps the first tubelet
    assert result.summary()["dropped_set_effect"] == result.dropped_set_effect

    # The same ablations done here by hand: merged embeddings of the unreduced prompt, rows zeroed, one forward.
    model, decision = toy_lab.model, result.token_map.df
    with torch.inference_mode():
        embeds = forward.merge_embeddings(model, prompt, forward.encode_media(model, prompt))  # (1, L, D)
        clean = model.language_model(inputs_embeds=embeds).logits[0, -1]
        assert result.target == int(clean.argmax())  # no reference: the unreduced answer's first token

        def ablated(rows):
            zeroed = embeds.clone()
            zeroed[0, torch.tensor(np.asarray(rows))] = 0.0  # unreduced: token-map row = position
            return model.language_model(inputs_embeds=zeroed).logits[0, -1]

        dropped_rows = decision.index[(decision.modality == "video") & ~decision.kept].to_numpy()
        strongest = frame.loc[frame.effect.idxmax()]
        by_hand = {"dropped set": ablated(dropped_rows), "strongest token": ablated([int(strongest.row)])}
    clean_margin = hand_margin(clean, result.target)
    reference = torch.log_softmax(clean.double(), dim=-1)
    kl = float((reference.exp() * (reference - torch.log_softmax(by_hand["dropped set"].double(), dim=-1))).sum())
    assert result.dropped_set_effect == pytest.approx(
        abs(hand_margin(by_hand["dropped set"], result.target) - clean_margin), abs=1e-4
    )
    assert result.dropped_set_kl == pytest.approx(kl, abs=1e-5)
    assert strongest.effect == pytest.approx(
        abs(hand_margin(by_hand["strongest token"], result.target) - clean_margin), abs=1e-4
    )
    effects = result.row_scores("effect")
    assert effects[int(strongest.row)] == strongest.effect and np.isnan(effects[decision.modality != "video"]).all()

    sampled = ol.studies.pruned_contribution(
        toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=5, seed=3, progress=False
    )
    again = ol.studies.pruned_contribution(toy_lab, prompt, ol.reducers.EVS(0.5), max_tokens=5, seed=3, progress=False)
    assert len(sampled.tokens) == 5 and sampled.tokens.row.tolist() == again.tokens.row.tolist()


def test_routing_shift_is_zero_without_reduction_and_counts_survivors(toy_lab):
    prompt = video_prompt(toy_lab, frames=8)
    none = ol.studies.routing_shift(toy_lab, prompt, None)
    assert (none.changed == 0).all()
    shifted = ol.studies.routing_shift(toy_lab, prompt, ol.reducers.EVS(0.75))
    survivors = toy_lab.run(prompt, max_new_tokens=0, reducer=ol.reducers.EVS(0.75)).token_map.num_positions
    assert (shifted[shifted.modality == "all"].compared == survivors).all()
    assert set(shifted.modality) == {"all", "text", "video", "audio"}
    per_modality = shifted[shifted.modality != "all"].groupby("layer")[["compared", "changed"]].sum()
    overall = shifted[shifted.modality == "all"].set_index("layer")[["compared", "changed"]]
    pd.testing.assert_frame_equal(per_modality, overall, check_names=False)


def test_expert_specialization_pools_prompts(toy_lab):
    prompts = [video_prompt(toy_lab, frames=4), "Count to three."]
    result = ol.studies.expert_specialization(toy_lab, prompts, reducer=None, top=3, progress=False)
    load = result.load
    top_k = toy_lab.config.text_config.num_experts_per_tok
    layer = load.layer.min()
    fed = prompts[0].token_map.counts()["text"] + toy_lab.prompt(prompts[1]).token_map.counts()["text"]
    assert load[(load.layer == layer) & (load.modality == "text")]["count"].sum() == fed * top_k
    entropy = result.entropy.set_index(["layer", "modality"]).entropy_bits
    for (layer_index, modality), group in load.groupby(["layer", "modality"]):
        counts = group["count"].to_numpy(dtype=float)
        shares = counts[counts > 0] / counts.sum()
        assert entropy[(layer_index, modality)] == pytest.approx(float(-(shares * np.log2(shares)).sum()), abs=1e-9)
    top = result.top_tokens
    assert top.groupby(["layer", "expert"]).size().max() <= 3
    assert {"modality", "text", "weight", "x0", "t0"} <= set(top.columns)
