"""Batches through the pipeline: `Lab.prefill`, `Lab.logits` over a list and `Lab.logits_from_embeds` over B rows give
each row exactly what its prompt gives alone (right padding in a causal model), with captures and interventions per
row, on mixed-modality batches of different lengths."""

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.toy import shapesworld as sw

CAPTURES = ["routing", "attention_mass", "mamba_mass"]
# Logits of a row in a batch against the prompt alone: 1e-5 plus 2e-6 of the logit (float32 GEMMs block a B-row batch
# differently than one row; measured at most 1.2e-5 on logits near 7.4, in 2 of 57K entries).
TOLERANCE = {"rtol": 2e-6, "atol": 1e-5}
KINDS = [(1, "image"), (2, "omni"), (3, "text"), (4, "audio"), (5, "video")]


@pytest.fixture(scope="module")
def prompts(twin_lab):
    """Five prompts of five kinds and five lengths (image, video + audio, text, audio, video)."""
    built = [sw.sample(seed, family).prompt(twin_lab) for seed, family in KINDS]
    assert len({len(prompt) for prompt in built}) == len(built)
    return built


def _mass_difference(alone, batched) -> float:
    """Largest |difference| of two masses over the prompt's segments (a run's map also has a generated segment)."""
    return max(
        float((alone.mass[layer][..., : batched.mass[layer].shape[-1]] - batched.mass[layer]).abs().max())
        for layer in alone.layers
    )


def test_prefill_rows_equal_each_prompt_alone(twin_lab, prompts):
    rows = twin_lab.prefill(prompts, capture=CAPTURES, reducer=None)
    assert [len(row.logits) for row in rows] == [len(prompt) for prompt in prompts]
    for prompt, row in zip(prompts, rows, strict=True):
        alone = twin_lab.run(prompt, max_new_tokens=1, reducer=None, capture=CAPTURES, return_logits=True)
        torch.testing.assert_close(row.logits, twin_lab.logits(prompt, reducer=None)[0], **TOLERANCE)
        torch.testing.assert_close(row.next_token_logits, alone.logits[0], **TOLERANCE)
        assert torch.equal(row.routing.experts, alone.routing.experts)  # exact: the same experts at every position
        torch.testing.assert_close(row.routing.weights, alone.routing.weights, rtol=0, atol=1e-6)
        assert _mass_difference(alone.attention_mass, row.captures["attention_mass"]) < 1e-5
        assert _mass_difference(alone.mamba_mass, row.captures.mamba_mass) < 1e-5
        assert row.timings["batch_rows"] == len(prompts)


def test_per_row_reducers_and_interventions(twin_lab, prompts):
    video = prompts[1]
    reducers = [None, ol.reducers.EVS(0.5), ol.reducers.EVS(0.8)]
    ablation = [ol.ablate_tokens(modality="audio")]
    interventions = [None, ablation, None]
    rows = twin_lab.prefill([video] * 3, reducer=reducers, interventions=interventions, batch_size=2)
    assert len({len(row.logits) for row in rows}) == 3  # three lengths in one call, two forwards
    for reducer, row_interventions, row in zip(reducers, interventions, rows, strict=True):
        alone = twin_lab.logits(video, reducer=reducer, interventions=row_interventions)[0]
        torch.testing.assert_close(row.logits, alone, **TOLERANCE)
    unablated = twin_lab.logits(video, reducer=reducers[1])[0]
    assert (rows[1].logits - unablated).abs().max() > 1e-3  # the ablation acted on its own row
    padded = twin_lab.logits([video, prompts[2]], reducer=None)
    short = len(prompts[2])
    assert padded.shape[:2] == (2, len(video)) and torch.isnan(padded[1, short:]).all()
    torch.testing.assert_close(padded[1, :short], twin_lab.logits(prompts[2], reducer=None)[0], **TOLERANCE)


def test_logits_from_embeds_applies_interventions_to_every_row_and_pads(twin_lab, prompts):
    prepared = [twin_lab.prepare(prompt, reducer=None) for prompt in prompts[:3]]
    ablation = [ol.ablate_tokens(modality="text", kept=True)]
    same = prepared[1].embeds.expand(3, -1, -1)
    together = twin_lab.logits_from_embeds(same, prepared[1].token_map, interventions=ablation)
    alone = twin_lab.logits_from_embeds(prepared[1].embeds, prepared[1].token_map, interventions=ablation)
    for row in range(3):  # every row ablated, not only the first
        torch.testing.assert_close(together[row], alone[0], **TOLERANCE)
    lengths = [len(row) for row in prepared]
    embeds = torch.zeros(3, max(lengths), prepared[0].embeds.shape[-1])
    for index, row in enumerate(prepared):
        embeds[index, : lengths[index]] = row.embeds[0]
    maps = [row.token_map for row in prepared]
    per_row = [None, ablation, None]
    padded = twin_lab.logits_from_embeds(embeds, maps, interventions=per_row, lengths=lengths)
    last = twin_lab.logits_from_embeds(embeds, maps, interventions=per_row, lengths=lengths, logits_to_keep=2)
    for index, row in enumerate(prepared):
        alone = twin_lab.logits_from_embeds(row.embeds, row.token_map, interventions=per_row[index])[0]
        torch.testing.assert_close(padded[index, : lengths[index]], alone, **TOLERANCE)
        assert torch.isnan(padded[index, lengths[index] :]).all()
        torch.testing.assert_close(last[index], alone[-2:], **TOLERANCE)


def test_batch_arguments_are_checked(twin_lab, prompts):
    with pytest.raises(OmniLabInputError, match="2 values for 3 rows"):
        twin_lab.prefill(prompts[:3], reducer=[None, None])
    with pytest.raises(OmniLabInputError, match="shortens the sequence inside the LLM"):
        twin_lab.prefill(prompts[:2], reducer=ol.reducers.FastV(layer=3, rate=0.5))
    prepared = twin_lab.prepare(prompts[2], reducer=None)
    with pytest.raises(OmniLabInputError, match="lengths="):
        twin_lab.logits_from_embeds(prepared.embeds.expand(2, -1, -1), prepared.token_map, lengths=[3, 99])
    with pytest.raises(OmniLabInputError, match="at least one prompt"):
        twin_lab.prefill([])
    budget = twin_lab.prefill(prompts[:2], capture=["routing"], capture_budget=10**9)
    assert all(row.routing is not None for row in budget)
    with pytest.raises(OmniLabInputError, match="GiB"):
        twin_lab.prefill(prompts, capture=["routing", "residual"], capture_budget=1000)


def test_studies_batched_equal_one_row_at_a_time(twin_lab, prompts):
    """reinsertion and pruned_contribution give the same rows whether their runs go in batches or one by one."""
    video = prompts[1]
    reducer = ol.reducers.EVS(0.7)
    one = ol.studies.reinsertion(twin_lab, video, reducer, groups="tubelet", batch_size=1, progress=False)
    many = ol.studies.reinsertion(twin_lab, video, reducer, groups="tubelet", batch_size=8, progress=False)
    np.testing.assert_allclose(one.groups.margin, many.groups.margin, rtol=0, atol=1e-4)
    one = ol.studies.pruned_contribution(twin_lab, video, reducer, max_tokens=6, batch_size=1, progress=False)
    many = ol.studies.pruned_contribution(twin_lab, video, reducer, max_tokens=6, batch_size=8, progress=False)
    np.testing.assert_allclose(one.tokens.effect, many.tokens.effect, rtol=0, atol=1e-4)
    assert one.dropped_set_effect == pytest.approx(many.dropped_set_effect, abs=1e-4)
