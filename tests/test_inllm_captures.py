"""Captures follow a sequence that shrinks inside the LLM (FastV, PyramidDrop, SparseVLM).

Every capture kind reads its per-position values through `Calls.positions(layer)` / `Calls.spread`: before the first
drop the captures equal an unreduced run's exactly; after a drop the surviving positions carry what the layers
compute on the shortened sequence (checked against the LLM run block by block by hand, with the run's drops and
SparseVLM's merges applied after their layers) and the dropped positions are absent (expert -1, NaN).
"""

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.capture.mass_capture import MambaInputs
from omni_lab.capture.segments import segment_positions
from omni_lab.forward import encode_media, merge_embeddings
from omni_lab.media import VideoClip
from omni_lab.partition import GroupBy
from omni_lab.presets import layers
from omni_lab.reduction import FastV, PyramidDrop, SparseVLM
from tests import synth

REDUCERS = {"fastv": FastV(3, 0.5), "pyramiddrop": PyramidDrop(0.6), "sparsevlm": SparseVLM(0.6)}
CAPTURES = ["routing", "residual", "attention_mass", "mamba_mass", "logit_lens"]


@pytest.fixture(scope="module")
def prompt(small_lab):
    video = VideoClip(synth.moving_square_frames(2, 64, 64), fps=2.0)
    return small_lab.prompt("What moves?", images=[synth.image_array(64, 64)], video=video)


@pytest.fixture(scope="module")
def unreduced(small_lab, prompt):
    return small_lab.run(prompt, max_new_tokens=2, reducer=None, capture=CAPTURES)


@pytest.fixture(scope="module", params=list(REDUCERS))
def reduced(request, small_lab, prompt):
    return small_lab.run(prompt, max_new_tokens=2, reducer=REDUCERS[request.param], capture=CAPTURES)


def first_drop(run) -> int:
    return min(stage.layer for stage in run.ledger.llm_stages)


@pytest.fixture(scope="module")
def embeds(small_lab, prompt):
    with torch.inference_mode():
        return merge_embeddings(small_lab.model, prompt, encode_media(small_lab.model, prompt))


def by_hand(lab, embeds, run) -> dict:
    """The LLM run block by block on the prompt plus the run's first answer token (the one decoding fed), with the
    run's drops (and merges) applied after their layers: {layer: (the positions it saw, its input hidden states)},
    and "out": the positions and hidden states after the last layer."""
    model = lab.model
    new = model.get_input_embeddings()(torch.tensor([[run.generated_ids[0]]]))
    hidden = torch.cat([embeds, new], dim=1)
    stages = {stage.layer: stage for stage in run.ledger.llm_stages}
    alive = np.arange(hidden.shape[1])
    seen = {"merged": 0}
    for index, block in enumerate(model.language_model.model.layers):
        seen[index] = (alive, hidden)
        hidden = block(hidden)
        stage = stages.get(index)
        if stage is None:
            continue
        merged = getattr(stage, "merged_into", None)  # SparseVLM's recycling: a centre carries its cluster's mean
        if merged is not None and (merged >= 0).any():
            hidden = hidden.clone()
            for centre in np.unique(merged[merged >= 0]):
                members = np.searchsorted(alive, [centre, *np.flatnonzero(merged == centre)])
                hidden[0, members[0]] = hidden[0, members].float().mean(0).to(hidden.dtype)
                seen["merged"] += len(members) - 1
        survives = np.append(stage.keep, True)[alive]  # the answer token is never dropped
        hidden, alive = hidden[:, torch.from_numpy(survives)], alive[survives]
    seen["out"] = (alive, hidden)  # after the last layer
    return seen


def attention_mass_by_hand(block, hidden, segment_ids, segments) -> torch.Tensor:
    """(H, T, S): each query's softmax probabilities summed per segment, from the layer's own q and k."""
    mixer = block.mixer
    normed = block.norm(hidden)
    length = hidden.shape[1]
    q = mixer.q_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2).double()
    k = mixer.k_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2).double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2))[0] * mixer.scaling
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), -float("inf"))
    probabilities = torch.softmax(scores, dim=-1)  # (H, T, T)
    pooled = torch.zeros(*probabilities.shape[:2], segments, dtype=torch.float64)
    return pooled.index_add_(-1, torch.from_numpy(segment_ids), probabilities)


def mamba_mass_by_hand(block, hidden, segment_ids, segments) -> torch.Tensor:
    """(H, T, S): |α[t, s]| = |C_t·B_s exp(Σ_{r=s+1..t} Δ_r A) Δ_s| summed per segment, each row normalised."""
    mixer = block.mixer
    _, dt, B, C = MambaInputs(mixer)(mixer.in_proj(block.norm(hidden)))
    per_group = mixer.num_heads // mixer.n_groups
    B = B[0].double().repeat_interleave(per_group, dim=1)  # (T, H, N)
    C = C[0].double().repeat_interleave(per_group, dim=1)
    dt = dt[0].double()  # (T, H)
    decay = torch.cumsum(dt * -torch.exp(mixer.A_log.double()), dim=0)  # (T, H)
    length = dt.shape[0]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    alpha = torch.einsum("thn,shn->hts", C, B) * torch.exp(
        (decay.T[:, :, None] - decay.T[:, None, :]).masked_fill(~causal, -float("inf"))
    )
    alpha = (alpha * dt.T[:, None, :]).abs()  # (H, T, S)
    pooled = torch.zeros(*alpha.shape[:2], segments, dtype=torch.float64)
    pooled.index_add_(-1, torch.from_numpy(segment_ids), alpha)
    return pooled / alpha.sum(-1, keepdim=True)


def test_captures_before_the_first_drop_equal_the_unreduced_run(reduced, unreduced):
    drop = first_drop(reduced)
    prompt = reduced.prompt.token_map.num_positions
    routing, reference = reduced.routing, unreduced.routing
    for slot, layer in enumerate(routing.layers):
        if layer <= drop:
            assert torch.equal(routing.experts[slot, :prompt], reference.experts[slot, :prompt])
            assert torch.equal(routing.weights[slot, :prompt], reference.weights[slot, :prompt])
            assert torch.equal(routing.shared_norm[slot, :prompt], reference.shared_norm[slot, :prompt])
    residual, expected = reduced.residual, unreduced.residual
    columns = ["residual_norm", "mixer_norm", "cosine"]
    early = lambda frame: frame[(frame.layer <= drop) & (frame.position < prompt)][columns].to_numpy()  # noqa: E731
    assert len(early(residual)) and np.array_equal(early(residual), early(expected))
    for name in ("attention_mass", "mamba_mass"):
        mass, reference_mass = reduced.captures[name], unreduced.captures[name]
        checked = [layer for layer in mass.layers if layer <= drop]
        assert checked
        for layer in checked:
            assert torch.equal(mass.mass[layer][:, :prompt], reference_mass.mass[layer][:, :prompt])
    assert any(layer > drop for layer in routing.layers)  # the layers after it are checked by hand below


def test_captures_after_a_drop_follow_the_kept_positions(small_lab, prompt, embeds, reduced):
    run, model = reduced, small_lab.model
    drop = first_drop(run)
    total = prompt.token_map.num_positions + 1  # the prompt and the one fed answer token
    final = segment_positions(run.attention_mass.token_map, GroupBy.of("item"))
    slots = {layer: slot for slot, layer in enumerate(run.routing.layers)}
    blocks = model.language_model.model.layers
    checked = set()
    with torch.inference_mode():
        seen = by_hand(small_lab, embeds, run)
        assert (seen["merged"] > 0) == isinstance(run.reducers["llm"], SparseVLM)  # SparseVLM's recycling is checked
        for info in layers(model):
            layer = info.index
            alive, hidden = seen[layer]
            gone = np.setdiff1d(np.arange(total), alive)
            if layer <= drop:
                assert not len(gone)
                continue
            assert len(gone) and set(gone) <= set(np.flatnonzero(run.token_map.by_position("dropped_at_layer") >= 0))
            block = blocks[layer]
            kept, absent = torch.from_numpy(alive), torch.from_numpy(gone)
            frame = run.residual[run.residual.layer == layer].set_index("position")
            contribution = (block(hidden) - hidden).float()[0]
            np.testing.assert_allclose(frame.residual_norm[alive], hidden[0].float().norm(dim=-1), rtol=1e-5)
            np.testing.assert_allclose(frame.mixer_norm[alive], contribution.norm(dim=-1), rtol=1e-4, atol=1e-5)
            assert frame.loc[gone, ["residual_norm", "mixer_norm", "cosine"]].isna().all().all()
            if info.kind == "moe":
                _, weights, experts = block.mixer.gate(block.norm(hidden))
                slot = slots[layer]
                assert torch.equal(run.routing.experts[slot, kept], experts)
                torch.testing.assert_close(run.routing.weights[slot, kept], weights.float(), rtol=1e-5, atol=1e-6)
                shared = block.mixer.shared_experts(block.norm(hidden))[0].float().norm(dim=-1)
                torch.testing.assert_close(run.routing.shared_norm[slot, kept], shared, rtol=1e-5, atol=1e-5)
                assert (run.routing.experts[slot, absent] == -1).all()
                assert run.routing.weights[slot, absent].isnan().all()
                assert run.routing.shared_norm[slot, absent].isnan().all()
            if info.kind in ("attention", "mamba"):
                by_hand_mass = attention_mass_by_hand if info.kind == "attention" else mamba_mass_by_hand
                expected = by_hand_mass(block, hidden, final.ids[alive], final.count)  # (H, T alive, S)
                mass = run.captures[f"{info.kind}_mass"].mass[layer]  # (H, total, S)
                torch.testing.assert_close(mass[:, kept].double(), expected, rtol=0, atol=2e-5)
                assert mass[:, absent].isnan().all()
                dropped_segments = np.setdiff1d(final.ids[gone], final.ids[alive])
                assert (mass[:, kept][..., torch.from_numpy(dropped_segments)] == 0).all()
            checked.add(info.kind)
    assert checked == {"moe", "attention", "mamba"}
    # the logit lens reads the last prompt position (text, never dropped) and the answer token at every boundary
    lens = run.captures["logit_lens"]
    alive, after = seen["out"]
    assert lens.positions == [total - 2, total - 1] and list(alive[-2:]) == lens.positions
    torch.testing.assert_close(lens.residuals[-1], after[0, -2:].float(), rtol=1e-5, atol=1e-5)
    alive, entering = seen[len(blocks) - 1]
    torch.testing.assert_close(lens.residuals[-2], entering[0, -2:].float(), rtol=1e-5, atol=1e-5)


def test_table_views_count_only_the_positions_a_layer_saw(reduced, unreduced):
    routing, drop = reduced.routing, first_drop(reduced)
    prompt = reduced.prompt.token_map.num_positions
    saw = [int((routing.experts[slot, :prompt, 0] >= 0).sum()) for slot in range(len(routing.layers))]
    assert saw[0] == prompt and min(saw) < prompt  # the first MoE layer is before every drop
    load = routing.load(by="all")
    for slot, layer in enumerate(routing.layers):
        present = int((routing.experts[slot, :, 0] >= 0).sum())  # the prompt's positions it saw and the answer's
        assert load[load.layer == layer]["count"].sum() == present * routing.experts.shape[2]
    # against the unreduced run: the same routing before the first drop; after it only the surviving tokens compare
    shift = routing.compare(unreduced.routing)
    assert list(shift.compared) == saw
    assert (shift[shift.layer < drop].changed == 0).all()
    assert "-" in " ".join(routing.paths(top=50).path)  # a dropped token's route shows the layers it missed


def test_grouped_query_rows_average_the_queries_that_reached_the_layer(small_lab, prompt):
    reducer = PyramidDrop(0.6)
    per_position = small_lab.run(prompt, max_new_tokens=1, reducer=reducer, capture=["attention_mass", "mamba_mass"])
    positions = prompt.token_map.num_positions
    gone = per_position.token_map.by_position("dropped_at_layer")[:positions] >= 0
    modality = prompt.token_map.by_position("modality")
    groups = {"gone": gone, "stayed": np.isin(modality, ["image", "video"]) & ~gone, "text": modality == "text"}
    kinds = [ol.capture.attention_mass(queries=groups), ol.capture.mamba_mass(queries=groups)]
    grouped = small_lab.run(prompt, max_new_tokens=1, reducer=reducer, capture=kinds)
    emptied = 0
    for name in ("attention_mass", "mamba_mass"):
        rows, means = per_position.captures[name], grouped.captures[name]
        for layer in rows.layers:
            for index, mask in enumerate(groups.values()):
                own = rows.mass[layer][:, np.flatnonzero(mask)]  # (H, members, S): NaN rows for dropped members
                if own.isnan().all():  # every member had left before this layer
                    assert means.mass[layer][:, index].isnan().all()
                    emptied += 1
                else:
                    torch.testing.assert_close(means.mass[layer][:, index], own.nanmean(1), rtol=1e-5, atol=1e-6)
    assert emptied  # the "gone" group is absent after the last drop


def test_captures_that_cannot_follow_a_drop_are_still_refused(small_lab, prompt):
    with pytest.raises(OmniLabInputError, match="inside the LLM"):
        small_lab.run(prompt, max_new_tokens=1, reducer=FastV(3, 0.5), cache=["llm.layers.4.moe.out"])
    with pytest.raises(OmniLabInputError, match="does not follow"):
        small_lab.run(prompt, max_new_tokens=1, reducer=PyramidDrop(0.5), capture={"llm.layers.4.moe.out": len})
    with pytest.raises(OmniLabInputError, match="inside the LLM"):
        small_lab.logits(prompt, reducer=SparseVLM(0.5), interventions=[ol.patch("llm.layers.4.in", lambda v, c: v)])
