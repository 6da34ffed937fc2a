"""Captures of your own (`capture={hook: fn}`) and of gradients (`capture=["grad:..."]` with `Lab.grad`), checked
against a hook registered by hand and against `torch.autograd.grad` on the same target."""

import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.presets import layers
from omni_lab.targets import answer_log_prob
from omni_lab.toy import shapesworld as sw


def _attention_layer(lab) -> int:
    return next(info.index for info in layers(lab.model) if info.kind == "attention")


def test_a_function_capture_equals_a_hook_registered_by_hand(small_lab):
    layer = _attention_layer(small_lab)
    module = small_lab.model.language_model.model.layers[layer].mixer.o_proj
    by_hand = []
    handle = module.register_forward_hook(lambda m, i, output: by_hand.append(output.norm(dim=-1).clone()))
    try:
        plain = small_lab.run("the cat sat", max_new_tokens=3, reducer=None)
    finally:
        handle.remove()
    run = small_lab.run(
        "the cat sat",
        max_new_tokens=3,
        reducer=None,
        capture={f"llm.layers.{layer}.attn.out": lambda value: value.norm(dim=-1)},
    )
    saved = run.captures[f"llm.layers.{layer}.attn.out"]
    assert run.generated_ids == plain.generated_ids
    assert len(saved) == len(by_hand) == 3  # the prompt, then the two generated tokens fed back
    for mine, theirs in zip(saved, by_hand, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    routers = small_lab.run("the cat sat", max_new_tokens=1, capture={"llm.layers.*.moe.router": lambda v: v[2]})
    chosen = routers.captures["llm.layers.*.moe.router"]
    moe = [info.index for info in layers(small_lab.model) if info.kind == "moe"]
    assert sorted(chosen) == sorted(f"llm.layers.{index}.moe.router" for index in moe)
    captured = small_lab.run("the cat sat", max_new_tokens=1, capture=["routing"]).routing.experts
    for slot, index in enumerate(moe):
        assert torch.equal(chosen[f"llm.layers.{index}.moe.router"][0], captured[slot])


def test_gradient_captures_equal_autograd_on_the_same_target(twin_lab):
    example = sw.sample(sw.eval_seed(0, "video", 3), family="video", task="direction")
    prompt = example.prompt(twin_lab)
    attention = _attention_layer(twin_lab)
    points = ["llm.embed", f"llm.layers.{attention}.attn.out", "llm.layers.0.in"]
    result = twin_lab.grad(prompt, example.answer, capture=[f"grad:{p}" for p in points[:2]] + ["grad:llm.layers.0.in"])
    gradients = {**result.captures[f"grad:{points[0]}"], **result.captures[f"grad:{points[1]}"]}
    gradients.update(result.captures["grad:llm.layers.0.in"])
    # by hand: the same forward with the activations kept, and torch.autograd.grad of the same value
    prepared = twin_lab.prepare(prompt, grad=True)
    answer = torch.tensor(result.target.answer_ids)
    embedding = twin_lab.model.get_input_embeddings()
    model = twin_lab.model.language_model.model
    kept = {}
    handles = [
        model.layers[0].register_forward_pre_hook(lambda m, args: kept.setdefault("llm.embed", args[0])),
        model.layers[attention].mixer.o_proj.register_forward_hook(
            lambda m, i, output: kept.setdefault(f"llm.layers.{attention}.attn.out", output)
        ),
    ]
    try:
        sequence = torch.cat([prepared.embeds, embedding(answer[None, :-1])], dim=1)
        logits = twin_lab.model.language_model(inputs_embeds=sequence).logits
        value = answer_log_prob(logits, len(prepared), answer)[0]
        grads = torch.autograd.grad(value, [kept["llm.embed"], kept[f"llm.layers.{attention}.attn.out"]])
    finally:
        for handle in handles:
            handle.remove()
        twin_lab.model.zero_grad(set_to_none=True)
    assert result.value == pytest.approx(float(value.detach()), abs=1e-6)
    torch.testing.assert_close(gradients["llm.embed"], grads[0][0].float(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gradients[f"llm.layers.{attention}.attn.out"], grads[1][0].float(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gradients["llm.layers.0.in"], gradients["llm.embed"])  # the same tensor
    assert gradients["llm.embed"].shape == (len(prepared) + len(answer) - 1, twin_lab.config.text_config.hidden_size)
    assert gradients["llm.embed"].abs().sum() > 0


def test_gradient_captures_are_refused_where_they_cannot_work(twin_lab):
    with pytest.raises(OmniLabInputError, match="lab.grad"):
        twin_lab.run("successor of 3?", capture=["grad:llm.embed"])
    with pytest.raises(OmniLabInputError, match="LLM hook points"):
        twin_lab.grad("successor of 3?", "4", capture=["grad:vision.*"])
    with pytest.raises(OmniLabInputError, match="tokens='first'"):
        twin_lab.grad("successor of 3?", ol.Target("4", alternative="5"))
    with pytest.raises(OmniLabInputError, match="hook name or pattern"):
        twin_lab.run("successor of 3?", capture={"llm.embed": "not a function"})
