"""FastV acts inside the LLM: equal to running the layers by hand with the sequence cut after layer K."""

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.forward import encode_media, merge_embeddings
from omni_lab.media import VideoClip
from omni_lab.reduction import FastV
from tests import synth


def received_by_brute_force(block, hidden):
    """Attention each key receives at this attention block, from the full probability matrix."""
    mixer = block.mixer
    normed = block.norm(hidden)
    length = hidden.shape[1]
    q = mixer.q_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2)
    k = mixer.k_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * mixer.scaling
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), -float("inf"))
    return torch.softmax(scores, dim=-1).mean(dim=(0, 1)).sum(0) / 1.0  # (L,) summed over queries, mean heads


def manual_logits(lab, embeds, layer, keep):
    """Run the LLM block by block, dropping the positions with keep False after `layer`."""
    language = lab.model.language_model
    hidden = embeds
    for index, block in enumerate(language.model.layers):
        hidden = block(hidden)
        if index == layer:
            hidden = hidden[:, torch.from_numpy(keep)]
    return language.lm_head(language.model.norm_f(hidden))[0, -1].float()


def test_fastv_equals_the_layers_run_by_hand(small_lab):
    prompt = small_lab.prompt(
        "What moves?",
        images=[synth.image_array(64, 64)],
        video=VideoClip(synth.moving_square_frames(4, 96, 64), fps=2.0),
    )
    layer, rate = 3, 0.6
    run = small_lab.run(prompt, max_new_tokens=2, reducer=FastV(layer, rate), return_logits=True)
    with torch.inference_mode():
        embeds = merge_embeddings(small_lab.model, prompt, encode_media(small_lab.model, prompt))
        hidden = embeds
        for block in small_lab.model.language_model.model.layers[:layer]:
            hidden = block(hidden)
        received = received_by_brute_force(small_lab.model.language_model.model.layers[layer], hidden)
        modality = prompt.token_map.df.sort_values("position").modality.to_numpy()
        candidates = np.flatnonzero(np.isin(modality, ["image", "video"]))
        budget = int(len(candidates) * (1 - rate))
        order = candidates[np.argsort(-received[candidates].numpy(), kind="stable")]
        keep = np.ones(len(modality), dtype=bool)
        keep[order[budget:]] = False
        torch.testing.assert_close(run.logits[0], manual_logits(small_lab, embeds, layer, keep), rtol=0, atol=1e-4)
        # the second token: layers up to K see the whole prompt, later ones the kept part, plus the new token
        new = small_lab.model.get_input_embeddings()(torch.tensor([[run.generated_ids[0]]]))
        extended = torch.cat([embeds, new], dim=1)
        second = manual_logits(small_lab, extended, layer, np.append(keep, True))
        torch.testing.assert_close(run.logits[1], second, rtol=0, atol=1e-4)
    dropped = run.token_map.df[run.token_map.df.dropped_at_layer == layer]
    assert len(dropped) == len(candidates) - budget and set(dropped.modality) <= {"image", "video"}
    assert dropped.kept.all()  # the first layers saw them
    stage = run.ledger.stages[run.ledger.stages.stage == f"after LLM layer {layer}"]
    assert stage.count_in.sum() == len(candidates) and stage.count_out.sum() == budget


def test_fastv_refuses_non_attention_layers_and_captures(small_lab):
    prompt = small_lab.prompt("?", images=[synth.image_array(64, 64)])
    with pytest.raises(OmniLabInputError, match="not an attention layer"):
        small_lab.run(prompt, max_new_tokens=1, reducer=FastV(2, 0.5))
    with pytest.raises(OmniLabInputError, match="inside the LLM"):  # cached LLM points index the full sequence
        small_lab.run(prompt, max_new_tokens=1, reducer=FastV(3, 0.5), cache=["llm.layers.4.moe.out"])
    combined = small_lab.run(
        prompt, max_new_tokens=1, reducer={"image": ol.reducers.RandomDrop(0.5), "llm": FastV(3, 0.5)}
    )
    assert combined.token_map.df[combined.token_map.df.modality == "image"].kept.mean() == 0.5
    assert combined.token_map.df.dropped_at_layer.max() == 3
    with pytest.raises(OmniLabInputError):
        FastV(3, 1.5)


def test_fastv_returns_its_decision_through_the_hook_session(small_lab):
    from omni_lab.capture import LLMDrop
    from omni_lab.capture.hooks import HookSession

    prompt = small_lab.prompt("What is shown?", images=[synth.image_array(64, 64)])
    reducer = FastV(3, 0.5)
    run = small_lab.run(prompt, max_new_tokens=1, reducer=reducer)
    model = small_lab.model
    with torch.inference_mode(), HookSession() as hooks:
        hook = reducer.install(hooks, model)
        assert hook.decision() is None  # nothing decided before the prefill
        hook.set_positions(prompt.token_map.by_position("modality"))
        model.language_model(inputs_embeds=merge_embeddings(model, prompt, encode_media(model, prompt)))
        decision = hook.decision()
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())
    assert isinstance(decision, LLMDrop) and decision.layer == 3
    image = prompt.token_map.by_position("modality") == "image"
    assert (~decision.keep).sum() == image.sum() - reducer.budget(int(image.sum())) and decision.keep[~image].all()
    assert np.isnan(decision.scores[~image]).all() and (decision.scores[image] > 0).all()
    dropped = run.token_map.df[run.token_map.df.dropped_at_layer == 3].position
    assert dropped.tolist() == np.flatnonzero(~decision.keep).tolist()
