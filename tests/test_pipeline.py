"""The one pipeline and its seams: prepare, the gradient path, streaming, a Lab shared by threads, Run.to_dict."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.presets import layers
from omni_lab.reduction import Reduction
from omni_lab.toy import shapesworld

CAPTURES = ["routing", "attention_mass", "mamba_mass", "residual"]


def _example_prompt(lab, seed, family):
    example = shapesworld.sample(seed, family)
    return example, example.prompt(lab)


def _assert_same_run(a, b):
    """Two runs with identical tokens, token maps and captures (timings aside)."""
    assert a.generated_ids == b.generated_ids and a.answer == b.answer and a.stop_reason == b.stop_reason
    assert torch.equal(a.token_ids, b.token_ids)
    left, right = a.token_map.df, b.token_map.df
    assert left.drop(columns="score").equals(right.drop(columns="score"))
    np.testing.assert_array_equal(left.score.to_numpy(), right.score.to_numpy())
    assert a.routing.layers == b.routing.layers
    assert torch.equal(a.routing.experts, b.routing.experts) and torch.equal(a.routing.weights, b.routing.weights)
    for name in ("attention_mass", "mamba_mass"):
        mine, theirs = getattr(a, name), getattr(b, name)
        assert mine.layers == theirs.layers
        for layer in mine.layers:
            assert torch.equal(mine.mass[layer], theirs.mass[layer]), (name, layer)
    assert a.residual.equals(b.residual)


# ---------------------------------------------------------------------------------------------------- prepare
def test_prepare_with_encoded_media_equals_prepare_from_scratch(twin_lab):
    _, prompt = _example_prompt(twin_lab, 3, "omni")
    encoded = twin_lab.encode(prompt)
    assert encoded.prompt is prompt
    reducer = ol.reducers.EVS(0.5)
    again = twin_lab.prepare(prompt, reducer=reducer, encoded=encoded)
    fresh = twin_lab.prepare(prompt, reducer=reducer)
    torch.testing.assert_close(again.embeds, fresh.embeds, rtol=0, atol=0)
    assert again.token_map.df.equals(fresh.token_map.df)
    # the kept positions are what the LLM sees: as many embeddings as kept rows, ids of the kept rows
    kept = fresh.token_map.df[fresh.token_map.df.kept]
    assert len(fresh) == len(kept) == fresh.input_ids.shape[1]
    assert fresh.keep.sum() < len(prompt)  # EVS pruned some video tokens
    # and a run with the same reducer prefills exactly these embeddings (its logits equal the LLM's on them)
    run = twin_lab.run(prompt, max_new_tokens=1, reducer=reducer, return_logits=True)
    with torch.inference_mode():
        direct = twin_lab.model.language_model(inputs_embeds=fresh.embeds).logits[0, -1].float()
    torch.testing.assert_close(run.logits[0], direct, rtol=0, atol=1e-5)


def test_encoded_media_of_another_prompt_is_refused(twin_lab):
    _, first = _example_prompt(twin_lab, 1, "image")
    _, second = _example_prompt(twin_lab, 2, "image")
    with pytest.raises(OmniLabInputError, match="another prompt"):
        twin_lab.run(second, max_new_tokens=1, encoded=twin_lab.encode(first))


def test_a_reducer_returning_a_wrong_keep_mask_is_named(twin_lab):
    class Broken:
        modalities = ("video",)

        def __call__(self, item):
            return Reduction(keep=torch.ones(3, dtype=torch.bool))

        def budget(self, item):
            return 3

        def __repr__(self):
            return "Broken()"

    class BadMerge(Broken):
        def __call__(self, item):
            count = item.embeddings.shape[0]
            keep = torch.ones(count, dtype=torch.bool)
            keep[0] = False
            return Reduction(keep=keep, merged_into=torch.full((count,), 0))

    _, prompt = _example_prompt(twin_lab, 4, "video")
    with pytest.raises(OmniLabInputError, match=r"Broken\(\) returned a keep mask of shape \(3,\).*shape \(\d+,\)"):
        twin_lab.run(prompt, max_new_tokens=1, reducer=Broken())
    with pytest.raises(OmniLabInputError, match="merged_into must point dropped tokens at kept tokens"):
        twin_lab.run(prompt, max_new_tokens=1, reducer=BadMerge())


# ---------------------------------------------------------------------------------------------- gradient path
@pytest.fixture(scope="module")
def twin64():
    return ol.load("toy", dtype=torch.float64, progress=False)


def _frozen_routing(lab):
    """Interventions that hold every MoE layer's expert choice at what the first forward chose, with the router's own
    weights for them (sigmoid scores gathered, normalised, scaled: what transformers computes). The top-k makes the
    model piecewise smooth: seen with transformers 5.25, this example's log-probability jumps by 3e-4 within 1e-4 of
    the point along its gradient, where a router tie flips. With the choice held, the function is smooth and its
    gradient at the point is the model's (asserted in the test)."""
    config = lab.config.text_config
    chosen: dict[str, torch.Tensor] = {}

    def hold(router_output, context):
        logits, weights, indices = router_output
        if context.name not in chosen:
            chosen[context.name] = indices.detach().clone()
            return router_output
        held = chosen[context.name]
        picked = logits.sigmoid().gather(1, held)
        if config.norm_topk_prob:
            picked = picked / (picked.sum(-1, keepdim=True) + 1e-20)
        return logits, (picked * config.routed_scaling_factor).to(weights.dtype), held

    moe = [info.index for info in layers(lab.model) if info.kind == "moe"]
    return [ol.patch(f"llm.layers.{index}.moe.router", hold) for index in moe]


def test_gradient_of_answer_log_probability_equals_finite_differences(twin64):
    lab = twin64
    example, prompt = _example_prompt(lab, 11, "omni")
    run = lab.run(prompt, max_new_tokens=8, reducer=None)
    answer = torch.tensor(run.generated_ids)
    prepared = lab.prepare(prompt, reducer=None, grad=True)
    assert prepared.embeds.dtype == torch.float64 and prepared.embeds.requires_grad
    x = prepared.embeds.detach().requires_grad_(True)
    with torch.no_grad():
        answer_embeds = lab.model.get_input_embeddings()(answer[None, :-1])

    def log_probability(embeds, interventions=None):
        logits = lab.logits_from_embeds(
            torch.cat([embeds, answer_embeds], dim=1), prepared.token_map, interventions=interventions
        )
        assert logits.dtype == torch.float64
        start = embeds.shape[1] - 1
        steps = torch.log_softmax(logits[0, start : start + len(answer)], dim=-1)
        return steps.gather(1, answer[:, None]).sum()

    value = log_probability(x)
    (gradient,) = torch.autograd.grad(value, x)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    frozen = _frozen_routing(lab)
    held_value = log_probability(x, frozen)  # the first call records the choice at x
    (held_gradient,) = torch.autograd.grad(held_value, x)
    assert float(held_value.detach()) == float(value.detach())
    torch.testing.assert_close(held_gradient, gradient, rtol=0, atol=1e-12)  # holding the choice changes nothing at x

    def central_difference(direction, eps):
        with torch.no_grad():
            plus, minus = log_probability(x + eps * direction, frozen), log_probability(x - eps * direction, frozen)
            return float((plus - minus) / (2 * eps))

    # transformers keeps norms and the router in float32 inside a float64 model, so f carries float32 rounding
    # (about 1e-8 here): single coordinates (gradients near 1e-4) need steps of 1e-2 (measured error <= 1.5%); along
    # the gradient (norm near 1e-2) a step of 1e-3 gives an estimate within about 2e-5.
    df = prepared.token_map.df
    kept = df[df.kept].sort_values("position")
    for modality in ("video", "audio", "text"):
        positions = torch.tensor(kept.position[kept.modality == modality].to_numpy())
        block = gradient[0, positions]  # (positions of this modality, D)
        flat = int(block.abs().argmax())
        position, dim = int(positions[flat // block.shape[1]]), flat % block.shape[1]
        bump = torch.zeros_like(x)
        bump[0, position, dim] = 1.0
        exact = float(gradient[0, position, dim])
        estimate = central_difference(bump, 1e-2)
        assert abs(exact - estimate) <= 5e-2 * abs(exact), (modality, position, dim, exact, estimate)
    # and along the gradient itself: the directional derivative is the gradient's norm
    direction = gradient / gradient.norm()
    estimate = central_difference(direction, 1e-3)
    assert abs(estimate - float(gradient.norm())) <= 1e-3 * float(gradient.norm()), (estimate, float(gradient.norm()))


def test_gradient_reaches_the_encoders_when_media_are_not_given(twin_lab):
    _, prompt = _example_prompt(twin_lab, 5, "image")
    prepared = twin_lab.prepare(prompt, reducer=None, grad=True)
    logits = twin_lab.logits_from_embeds(prepared.embeds, prepared.token_map)
    logits[0, -1].max().backward()
    projector = twin_lab.model.multi_modal_projector
    grads = [p.grad for p in projector.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    twin_lab.model.zero_grad(set_to_none=True)


def test_logits_from_embeds_honours_interventions(twin_lab):
    _, prompt = _example_prompt(twin_lab, 6, "video")
    prepared = twin_lab.prepare(prompt, reducer=None)
    ablation = [ol.ablate_tokens(modality="video")]
    with torch.no_grad():
        plain = twin_lab.logits_from_embeds(prepared.embeds, prepared.token_map)
        ablated = twin_lab.logits_from_embeds(prepared.embeds, prepared.token_map, interventions=ablation)
    reference = twin_lab.logits(prompt, reducer=None, interventions=ablation)
    torch.testing.assert_close(ablated, reference, rtol=0, atol=1e-5)
    assert (plain[0, -1] - ablated[0, -1]).abs().max() > 1e-3
    with torch.no_grad():
        last = twin_lab.logits_from_embeds(prepared.embeds, prepared.token_map, logits_to_keep=3)
    torch.testing.assert_close(last, plain[:, -3:], rtol=0, atol=1e-5)  # the head on 3 rows vs all: float32 order
    with pytest.raises(OmniLabInputError, match="width"):
        twin_lab.logits_from_embeds(torch.zeros(1, 3, 7), prepared.token_map)
    with pytest.raises(OmniLabInputError, match="logits_to_keep"):
        twin_lab.logits_from_embeds(prepared.embeds, prepared.token_map, logits_to_keep=-1)


# -------------------------------------------------------------------------------------------------- streaming
def test_stream_yields_each_token_then_the_same_run_as_run(twin_lab):
    _, prompt = _example_prompt(twin_lab, 7, "omni")
    arguments = dict(max_new_tokens=6, capture=CAPTURES, reducer=ol.reducers.EVS(0.5), return_logits=True)
    items = list(twin_lab.stream(prompt, **arguments))
    *tokens, streamed = items
    assert isinstance(streamed, ol.Run) and all(isinstance(t, ol.StreamToken) for t in tokens)
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert [t.id for t in tokens] == streamed.generated_ids
    assert (
        "".join(t.text for t in tokens).strip()
        == twin_lab.tokenizer.decode(streamed.generated_ids, skip_special_tokens=True).strip()
    )
    assert torch.equal(torch.stack([t.logits for t in tokens]), streamed.logits)
    _assert_same_run(streamed, twin_lab.run(prompt, **arguments))


def test_stream_hands_out_tokens_before_decoding_ends_and_releases_the_lab_when_closed(twin_lab):
    _, prompt = _example_prompt(twin_lab, 8, "text")
    stream = twin_lab.stream(prompt, max_new_tokens=4, capture=["routing"])
    first = next(stream)
    assert isinstance(first, ol.StreamToken) and first.index == 0
    assert twin_lab._lock.locked()  # mid-answer the model is ours
    stream.close()
    assert not twin_lab._lock.locked()
    twin_lab.run(prompt, max_new_tokens=1)  # and the next run goes through with no hook left behind


def test_stream_checks_arguments_before_anything_runs(twin_lab):
    with pytest.raises(OmniLabInputError, match="max_new_tokens"):
        twin_lab.stream("hi", max_new_tokens=-1)
    assert not twin_lab._lock.locked()


# ------------------------------------------------------------------------------------------------ concurrency
def test_eight_threads_sharing_a_lab_get_what_each_gets_alone(twin_lab):
    families = ["image", "video", "audio", "omni", "text", "image", "video", "omni"]
    prompts = [_example_prompt(twin_lab, 100 + i, family)[1] for i, family in enumerate(families)]
    arguments = dict(max_new_tokens=3, capture=CAPTURES)
    alone = [twin_lab.run(prompt, **arguments) for prompt in prompts]
    together: list = [None] * len(prompts)
    errors: list = []
    barrier = threading.Barrier(len(prompts))

    def work(index):
        try:
            barrier.wait()
            if index % 2:
                together[index] = list(twin_lab.stream(prompts[index], **arguments))[-1]
            else:
                together[index] = twin_lab.run(prompts[index], **arguments)
        except Exception as error:  # reported below with its thread
            errors.append((index, error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for solo, shared in zip(alone, together, strict=True):
        _assert_same_run(solo, shared)


# ------------------------------------------------------------------------------------------------------ to_dict
def test_run_to_dict_is_json_and_counts_the_token_map(twin_lab):
    _, prompt = _example_prompt(twin_lab, 9, "omni")
    run = twin_lab.run(prompt, max_new_tokens=4, reducer=ol.reducers.EVS(0.5), capture=["routing"])
    summary = json.loads(json.dumps(run.to_dict()))
    df = run.token_map.df
    prompt_rows = df[df.modality != "generated"]
    assert summary["tokens_before"] == prompt_rows.modality.value_counts().to_dict()
    assert summary["tokens_after"] == prompt_rows[prompt_rows.kept].modality.value_counts().to_dict()
    assert summary["tokens_after"]["video"] < summary["tokens_before"]["video"]
    assert summary["tokens_total"]["after"] == run.token_map.num_positions - len(run.generated_ids)
    assert summary["answer"] == run.answer and summary["generated_ids"] == run.generated_ids
    assert summary["captures"] == ["routing"] and set(summary["reducers"]) == {"video"}


# --------------------------------------------------------------------------------------------------------- logs
def test_expected_cpu_notices_are_quiet_and_real_warnings_are_not():
    code = (
        "import omni_lab as ol\n"
        "lab = ol.load('toy', progress=False)\n"
        "lab.run(lab.prompt('hello'), max_new_tokens=2)\n"
        "from transformers.utils import logging\n"
        "logging.get_logger('transformers.test').warning('a real warning stays visible')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "falling back to its reference" not in result.stderr
    assert "torch_dtype" not in result.stderr
    assert "a real warning stays visible" in result.stderr
