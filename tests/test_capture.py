"""Captures and interventions: routing, residual, cached activations, patches; hooks always come off."""

import copy

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.media import VideoClip
from omni_lab.presets import layers
from tests import synth


def omni_prompt(lab, frames=4):
    return lab.prompt(
        "What moves, and what do you hear?",
        images=[synth.image_array(64, 64)],
        video=VideoClip(synth.moving_square_frames(frames, 96, 64), fps=2.0),
        audio=(synth.tone(0.6), 16000),
    )


def moe_layers(lab):
    return [i for i, kind in enumerate(lab.layer_pattern) if kind == "E"]


def rms_norm(hidden, weight, eps):
    hidden = hidden.double()
    return hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def recompute_routing(lab, layer, layer_input):
    """Top-k experts and weights from the gate weight, its bias and the layer's input, written out by hand."""
    block = lab.model.language_model.model.layers[layer]
    text = lab.config.text_config
    normed = rms_norm(layer_input[0], block.norm.weight, block.norm.variance_epsilon)  # (L, D)
    scores = torch.sigmoid(normed @ block.mixer.gate.weight.double().T)  # (L, E)
    choice = torch.topk(scores + block.mixer.gate.e_score_correction_bias.double(), text.num_experts_per_tok).indices
    weights = scores.gather(1, choice)
    weights = weights / weights.sum(-1, keepdim=True) * text.routed_scaling_factor
    return choice, weights


def sorted_pairs(experts, weights):
    order = experts.argsort(-1)
    return experts.gather(-1, order), weights.gather(-1, order)


def test_routing_equals_a_recomputation_from_gate_weight_bias_and_layer_input(small_lab):
    layers = moe_layers(small_lab)
    run = small_lab.run(
        omni_prompt(small_lab), max_new_tokens=3, capture=["routing"], cache=[f"llm.layers.{i}.in" for i in layers]
    )
    routing = run.routing
    assert routing.layers == layers
    positions = routing.experts.shape[1]
    assert positions == run.token_map.num_positions - 1  # the last generated token is never fed back
    for slot, layer in enumerate(layers):
        expected_experts, expected_weights = recompute_routing(small_lab, layer, run.cache[f"llm.layers.{layer}.in"])
        got_experts, got_weights = sorted_pairs(routing.experts[slot], routing.weights[slot].double())
        want_experts, want_weights = sorted_pairs(expected_experts, expected_weights)
        assert torch.equal(got_experts, want_experts)
        torch.testing.assert_close(got_weights, want_weights, rtol=0, atol=1e-5)
    scale = small_lab.config.text_config.routed_scaling_factor
    torch.testing.assert_close(routing.weights.sum(-1), torch.full(routing.weights.shape[:2], scale), rtol=0, atol=1e-5)


def test_the_correction_bias_changes_the_choice_but_not_the_weight(toy_lab):
    lab = copy.copy(toy_lab)
    lab.model = copy.deepcopy(toy_lab.model)
    layer = moe_layers(lab)[0]
    gate = lab.model.language_model.model.layers[layer].mixer.gate
    plain = lab.run("Count to three.", max_new_tokens=1, capture=["routing"]).routing
    never_chosen = int(torch.bincount(plain.experts[0].reshape(-1), minlength=gate.num_experts).argmin())
    gate.e_score_correction_bias[never_chosen] = 10.0
    biased = lab.run(
        "Count to three.", max_new_tokens=1, capture=[ol.capture.routing(scores=True)], cache=[f"llm.layers.{layer}.in"]
    )
    experts, weights = biased.routing.experts[0], biased.routing.weights[0]
    assert (experts == never_chosen).any(-1).all()  # the bias put it into every position's top-k
    expected_experts, expected_weights = recompute_routing(lab, layer, biased.cache[f"llm.layers.{layer}.in"])
    assert torch.equal(*(sorted_pairs(e, w)[0] for e, w in ((experts, weights), (expected_experts, expected_weights))))
    scores = biased.routing.scores[0]
    chosen_scores = scores.gather(1, experts)
    expected = chosen_scores / chosen_scores.sum(-1, keepdim=True) * lab.config.text_config.routed_scaling_factor
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-6)  # weights use the unbiased scores


def test_routing_tables(small_lab):
    run = small_lab.run(omni_prompt(small_lab), max_new_tokens=2, capture=["routing"])
    load = run.routing.load(by="modality")
    assert set(load.modality) == {"text", "image", "video", "audio", "generated"}
    top_k = small_lab.config.text_config.num_experts_per_tok
    counts = run.token_map.df[run.token_map.df.kept].modality.value_counts()
    for modality, group in load[load.layer == run.routing.layers[0]].groupby("modality"):
        fed = counts[modality] - (1 if modality == "generated" else 0)
        assert group["count"].sum() == fed * top_k
    entropy = run.routing.entropy()
    assert (entropy.entropy_bits >= 0).all() and (entropy.entropy_bits <= np.log2(16) + 1e-9).all()
    token = run.routing.for_token(3)
    assert len(token) == len(run.routing.layers) * top_k
    slot = run.routing.layers.index(int(token.layer.iloc[0]))
    assert token.expert.tolist()[:top_k] == run.routing.experts[slot, 3].tolist()
    # a table is computed once per grouping; each caller gets its own copy
    load.loc[:, "count"] = -1
    again = run.routing.load(by="modality")
    assert (again["count"] >= 0).all() and again.equals(run.routing._load("modality"))
    masks = {"first": np.arange(len(run.token_map)) < 5}  # unhashable groups are computed each time
    assert run.routing.load(by=masks)["count"].sum() > 0


def test_routing_compare_matches_rows_across_a_reduced_run(small_lab):
    prompt = omni_prompt(small_lab, frames=6)
    full = small_lab.run(prompt, max_new_tokens=1, capture=["routing"], reducer=None)
    same = small_lab.run(prompt, max_new_tokens=1, capture=["routing"], reducer=None)
    reduced = small_lab.run(prompt, max_new_tokens=1, capture=["routing"])
    assert (same.routing.compare(full.routing).changed == 0).all()
    table = reduced.routing.compare(full.routing)
    assert (table.compared == reduced.token_map.num_positions - 1).all()
    # by modality, against expert sets compared one surviving token at a time
    by_modality = reduced.routing.compare(full.routing, by="modality").set_index(["layer", "modality"])
    df = reduced.token_map.df
    survivors = df[(df.position >= 0) & (df.modality != "generated")]
    full_positions = full.token_map.df.loc[survivors.index, "position"]
    for slot, layer in enumerate(full.routing.layers):
        changed = np.array(
            [
                set(reduced.routing.experts[slot, mine].tolist()) != set(full.routing.experts[slot, theirs].tolist())
                for mine, theirs in zip(survivors.position, full_positions, strict=True)
            ]
        )
        for modality in ["all", "text", "image", "video", "audio"]:
            mask = np.ones(len(changed), bool) if modality == "all" else (survivors.modality == modality).to_numpy()
            row = by_modality.loc[(layer, modality)]
            assert (row.compared, row.changed) == (mask.sum(), changed[mask].sum())
            assert row.share_changed == pytest.approx(changed[mask].mean())
    # causal: the image precedes the pruned video, so its routing cannot move; the audio after it does
    assert (by_modality.xs("image", level="modality").changed == 0).all()
    assert by_modality.loc[(full.routing.layers[-1], "audio")].changed > 0
    with pytest.raises(OmniLabInputError, match="by="):
        reduced.routing.compare(full.routing, by="frame")


def test_entropy_bits_and_routing_entropy():
    from omni_lab.capture import Routing, entropy_bits
    from omni_lab.token_map import TokenMap, _empty_columns

    assert entropy_bits([0.5, 0.5, 0.0]) == 1.0 and entropy_bits([0.25] * 4) == 2.0 and entropy_bits([1.0]) == 0.0
    columns = _empty_columns(4)
    columns["position"][:] = np.arange(4)
    columns["modality"][:] = ["text", "text", "image", "image"]
    experts = torch.tensor([[[0, 1], [2, 3], [0, 0], [0, 1]]])  # (layers, positions, k): 4 experts
    routing = Routing([1], experts, torch.ones(1, 4, 2), torch.ones(1, 4), TokenMap(columns), 4)
    entropy = routing.entropy().set_index("modality").entropy_bits
    assert entropy["text"] == 2.0  # experts 0, 1, 2, 3 once each
    assert entropy["image"] == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))  # 0 three times, 1 once


def test_expert_ablation_changes_logits_only_from_the_ablated_tokens_on(small_lab):
    prompt = omni_prompt(small_lab)
    layer = moe_layers(small_lab)[1]
    baseline = small_lab.run(prompt, max_new_tokens=1, capture=["routing"])
    image_positions = np.flatnonzero(baseline.token_map.select(modality="image"))
    slot = baseline.routing.layers.index(layer)
    expert = int(baseline.routing.experts[slot, image_positions[0], 0])
    intervention = ol.ablate_experts(layer, [expert], modality="image")
    plain_logits = small_lab.logits(prompt)
    ablated_logits = small_lab.logits(prompt, interventions=[intervention])
    first = image_positions[0]
    before = (ablated_logits[0, :first] - plain_logits[0, :first]).abs().max().item()
    assert before <= 1e-5, before  # float noise only: the fused experts regroup tokens
    assert (ablated_logits[0, first] - plain_logits[0, first]).abs().max() > 1e-4


def test_expert_ablation_equals_a_manual_recomputation_of_the_layer(small_lab):
    prompt = omni_prompt(small_lab)
    layer = moe_layers(small_lab)[1]
    expert = 3
    run = small_lab.run(
        prompt,
        max_new_tokens=1,
        interventions=[ol.ablate_experts(layer, [expert], "video")],
        cache=[f"llm.layers.{layer}.in", f"llm.layers.{layer}.moe.out"],
    )
    block = small_lab.model.language_model.model.layers[layer]
    moe = block.mixer
    with torch.inference_mode():
        normed = block.norm(run.cache[f"llm.layers.{layer}.in"])
        _, weights, indices = moe.gate(normed)
        video = torch.from_numpy(run.token_map.select(modality="video")[: normed.shape[1]])
        weights = weights.masked_fill((indices == expert) & video[:, None], 0.0)
        flat = normed.view(-1, normed.shape[-1])
        manual = moe.experts(flat, indices, weights).view_as(normed) + moe.shared_experts(normed)
    assert ((indices == expert) & video[:, None]).any()
    torch.testing.assert_close(run.cache[f"llm.layers.{layer}.moe.out"], manual, rtol=0, atol=1e-6)


def test_force_experts_routes_selected_tokens_with_router_weights(small_lab):
    prompt = omni_prompt(small_lab)
    layer = moe_layers(small_lab)[0]
    forced = [0, 1, 2, 3]
    run = small_lab.run(
        prompt,
        max_new_tokens=1,
        capture=[ol.capture.routing(scores=True)],
        interventions=[ol.force_experts(layer, forced, {"modality": "audio"})],
    )
    audio = torch.from_numpy(run.token_map.select(modality="audio")[: run.routing.experts.shape[1]])
    experts, weights, scores = run.routing.experts[0], run.routing.weights[0], run.routing.scores[0]
    assert (experts[audio].sort(-1).values == torch.tensor(forced)).all()
    assert not (experts[~audio].sort(-1).values == torch.tensor(forced)).all(-1).all()
    expected = scores[audio][:, forced]
    expected = expected / expected.sum(-1, keepdim=True) * small_lab.config.text_config.routed_scaling_factor
    torch.testing.assert_close(weights[audio], expected, rtol=0, atol=1e-6)


def test_ablate_tokens_zeroes_their_merged_embeddings(small_lab):
    prompt = omni_prompt(small_lab)
    run = small_lab.run(
        prompt, max_new_tokens=1, cache=["llm.embed"], interventions=[ol.ablate_tokens(modality="video", frame=0)]
    )
    embeds = run.cache["llm.embed"][0]
    chosen = run.token_map.select(modality="video", frame=0)[: embeds.shape[0]]
    assert chosen.sum() > 0 and (embeds[torch.from_numpy(chosen)] == 0).all()
    assert (embeds[torch.from_numpy(~chosen)].abs().sum(-1) > 0).all()


def test_patch_sees_positions_and_replaces_the_value(small_lab):
    prompt = small_lab.prompt("Say something.")
    seen = []

    def silence_late_positions(value, context):
        seen.append((context.start, context.length, context.step))
        value = value.clone()
        value[0, max(0, 5 - context.start) :] = 0
        return value

    run = small_lab.run(
        prompt,
        max_new_tokens=3,
        cache=["llm.layers.3.attn.out"],
        interventions=[ol.patch("llm.layers.3.attn.out", silence_late_positions)],
    )
    assert seen == [(0, len(prompt), 0), (len(prompt), 1, 1), (len(prompt) + 1, 1, 2)]
    cached = run.cache["llm.layers.3.attn.out"][0]
    assert cached.shape[0] == len(prompt) + 2 and (cached[5:] == 0).all() and (cached[:5] != 0).any()


def test_hooks_come_off_and_the_model_is_unchanged_even_when_a_run_raises(small_lab):
    model = small_lab.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    prompt = omni_prompt(small_lab)
    plain = small_lab.logits(prompt)

    def boom(value, context):
        raise RuntimeError("patch failed")

    with pytest.raises(RuntimeError, match="patch failed"):
        small_lab.run(prompt, capture=["routing", "residual"], interventions=[ol.patch("llm.layers.2.mamba.out", boom)])
    small_lab.run(prompt, max_new_tokens=2, capture=["routing", "residual"], cache=["llm.layers.*.in", "vision.*"])
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert torch.equal(small_lab.logits(prompt), plain)


def test_captures_do_not_change_outputs(small_lab):
    prompt = omni_prompt(small_lab)
    plain = small_lab.run(prompt, max_new_tokens=4, return_logits=True)
    captured = small_lab.run(
        prompt,
        max_new_tokens=4,
        return_logits=True,
        capture=["routing", "residual"],
        cache=["llm.layers.*.moe.router", "llm.logits", "vision.out"],
    )
    assert plain.generated_ids == captured.generated_ids and torch.equal(plain.logits, captured.logits)


def test_residual_norms_match_the_cached_stream(small_lab):
    run = small_lab.run(
        omni_prompt(small_lab),
        max_new_tokens=1,
        capture=["residual"],
        cache=["llm.layers.4.in", "llm.layers.4.moe.out"],
    )
    rows = run.residual[run.residual.layer == 4]
    residual, contribution = run.cache["llm.layers.4.in"][0], run.cache["llm.layers.4.moe.out"][0]
    np.testing.assert_allclose(rows.residual_norm, residual.norm(dim=-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(rows.mixer_norm, contribution.norm(dim=-1).numpy(), rtol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(residual, contribution, dim=-1).numpy()
    np.testing.assert_allclose(rows.cosine, cosine, atol=1e-5)
    assert set(run.residual.kind) == {"M", "E", "*"} and run.residual.layer.nunique() == 12


def test_cache_in_half_precision_and_derived_mamba_conv(small_lab):
    prompt = small_lab.prompt("Hello there.")
    run = small_lab.run(
        prompt,
        max_new_tokens=3,
        cache=["llm.layers.0.mamba.conv", "llm.layers.0.mamba.in_proj"],
        cache_dtype=torch.float16,
    )
    conv = run.cache["llm.layers.0.mamba.conv"]
    assert conv.dtype == torch.float16 and conv.shape[1] == len(prompt) + 2
    mixer = small_lab.model.language_model.model.layers[0].mixer
    projected = run.cache["llm.layers.0.mamba.in_proj"].float()
    xbc = projected[..., mixer.intermediate_size : mixer.intermediate_size + mixer.conv_dim]  # (1, L, C)
    padded = torch.nn.functional.pad(xbc.transpose(1, 2), (mixer.conv_kernel_size - 1, 0))
    manual = torch.nn.functional.conv1d(padded, mixer.conv1d.weight, mixer.conv1d.bias, groups=mixer.conv_dim)
    manual = torch.nn.functional.silu(manual).transpose(1, 2)  # the whole sequence at once, no conv state
    torch.testing.assert_close(conv.float(), manual, rtol=0, atol=2e-3)  # float16 storage


def test_hook_names_cover_every_layer_of_the_released_architecture(full_meta_lab):
    names = full_meta_lab.hook_names()
    for layer, kind in enumerate(full_meta_lab.layer_pattern):
        assert f"llm.layers.{layer}.in" in names
        points = {
            "M": ("mamba.in_proj", "mamba.conv", "mamba.ssm", "mamba.out"),
            "E": ("moe.router", "moe.shared", "moe.routed", "moe.out"),
            "*": ("attn.q", "attn.k", "attn.v", "attn.out"),
        }[kind]
        assert all(f"llm.layers.{layer}.{point}" in names for point in points)
    assert [i for i in range(52) if f"llm.layers.{i}.attn.q" in names] == [5, 12, 19, 26, 33, 42]
    assert {
        "vision.patch_embed",
        "vision.blocks.31",
        "vision.out",
        "vision.projector",
        "audio.subsampling",
        "audio.blocks.23",
        "audio.projector",
        "llm.embed",
        "llm.norm",
        "llm.logits",
    } <= set(names)


def test_hook_points_are_walked_once_per_model_and_keep_model_order(small_lab):
    """The module tree is walked once per model (`hooks._model_points`); each prompt adds its `reduce.*` points between
    the encoders' and the LLM's, the order `expand_names` resolves globs in."""
    from omni_lab.capture import hooks

    model = small_lab.model
    assert hooks._model_points(model) is hooks._model_points(model)
    prompt = small_lab.prompt(
        "Both.", images=[np.zeros((64, 64, 3), np.uint8)], video=np.zeros((4, 64, 64, 3), np.uint8)
    )
    names = list(hooks.hook_points(model, prompt))
    assert names == small_lab.hook_names(prompt)
    reduce = [name for name in names if name.startswith("reduce.")]
    assert reduce == ["reduce.image.0", "reduce.video.0"]
    assert names.index("audio.projector") < names.index("reduce.image.0") < names.index("llm.embed")
    assert not any(name.startswith("reduce.") for name in small_lab.hook_names())
    walked = hooks._walk(model)
    assert [list(part) for part in walked] == [list(part) for part in hooks._model_points(model)]


def test_bad_capture_requests_are_input_errors(small_lab):
    prompt = small_lab.prompt("Hi.")
    for arguments in (
        dict(capture=["routes"]),
        dict(cache=["llm.layers.99.in"]),
        dict(interventions=[ol.patch("llm.layers.0.mamba.conv", lambda v, c: v)]),
        dict(interventions=["ablate"]),
        dict(capture=[ol.capture.attention_mass(layers=[0])]),
    ):
        with pytest.raises(OmniLabInputError):
            small_lab.run(prompt, max_new_tokens=1, **arguments)


def test_memory_budget_refuses_with_the_estimate(small_lab):
    prompt = omni_prompt(small_lab)
    with pytest.raises(OmniLabInputError, match=r"GiB.*Cheaper"):
        small_lab.run(prompt, capture=["routing", "residual"], cache=["llm.layers.*.in"], capture_budget=1000)
    from omni_lab.capture.session import CaptureSession

    session = CaptureSession(small_lab.model, prompt, [ol.capture.routing()], cache=["llm.layers.3.attn.k"])
    parts = session.estimate_bytes(4)
    text = small_lab.config.text_config
    assert parts["routing"] == 5 * (len(prompt) + 4) * (text.num_experts_per_tok * 12 + 4)  # 5 MoE layers
    assert parts["cache llm.layers.3.attn.k"] == (len(prompt) + 4) * text.num_key_value_heads * text.head_dim * 4


def feed_embeddings(lab, run):
    """The embeddings the LLM saw: the reduced prompt's merged embeddings, then the fed generated tokens."""
    from omni_lab.forward import apply_reducers, encode_media, merge_embeddings, resolve_reducers

    model = lab.model
    with torch.inference_mode():
        encoded = encode_media(model, run.prompt)
        merged = merge_embeddings(model, run.prompt, encoded)
        reduced = apply_reducers(merged, run.prompt, encoded, resolve_reducers("model", lab.config))
        fed = torch.tensor([run.generated_ids[:-1]])
        return torch.cat([reduced.embeds, model.get_input_embeddings()(fed)], dim=1)


def test_attention_mass_equals_eager_probabilities_pooled(small_lab):
    run = small_lab.run(omni_prompt(small_lab, frames=6), max_new_tokens=4, capture=["attention_mass"])
    mass = run.attention_mass
    eager = copy.deepcopy(small_lab.model.language_model)
    eager.set_attn_implementation("eager")
    with torch.inference_mode():
        attentions = eager(inputs_embeds=feed_embeddings(small_lab, run), output_attentions=True).attentions
    segment_of = torch.from_numpy(
        np.asarray([mass.segments.label.tolist().index(label) for label in _position_labels(run.token_map)])
    )
    one_hot = torch.nn.functional.one_hot(segment_of, len(mass.segments)).float()
    attention_layers = [i for i, kind in enumerate(small_lab.layer_pattern) if kind == "*"]
    assert mass.layers == attention_layers and len(mass.queries) == attentions[0].shape[-1]
    for layer, probabilities in zip(attention_layers, attentions, strict=True):
        expected = probabilities[0] @ one_hot  # (H, P, S)
        torch.testing.assert_close(mass.mass[layer], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(mass.mass[layer].sum(-1), torch.ones(expected.shape[:2]), rtol=0, atol=1e-5)
    assert "generated" in set(mass.segments.modality)


def _position_labels(token_map):
    """Default ('item') segment label of each LLM position, written out from the token map by hand."""
    df = token_map.df[token_map.df.kept].sort_values("position")
    labels = []
    for modality, item in zip(df.modality, df["item"], strict=True):
        labels.append("generated" if modality == "generated" else f"{modality} {item}")
    return labels[:-1]  # the last generated token is never fed


def test_mamba_mass_equals_the_sequential_recurrence(small_lab):
    from omni_lab.kernels import spec

    layer = 2
    run = small_lab.run(
        omni_prompt(small_lab), max_new_tokens=3, capture=["mamba_mass"], cache=[f"llm.layers.{layer}.mamba.in_proj"]
    )
    mixer = small_lab.model.language_model.model.layers[layer].mixer
    projected = run.cache[f"llm.layers.{layer}.mamba.in_proj"].double()  # (1, P, in_proj)
    _, xbc, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
    padded = torch.nn.functional.pad(xbc.transpose(1, 2), (mixer.conv_kernel_size - 1, 0))
    conv = torch.nn.functional.conv1d(
        padded, mixer.conv1d.weight.double(), mixer.conv1d.bias.double(), groups=mixer.conv_dim
    )
    conv = torch.nn.functional.silu(conv).transpose(1, 2)
    size = mixer.n_groups * mixer.ssm_state_size
    _, B, C = conv.split([mixer.intermediate_size, size, size], dim=-1)
    step = torch.nn.functional.softplus(dt + mixer.dt_bias.double()).clamp(*mixer.time_step_limit)
    shape = (1, -1, mixer.n_groups, mixer.ssm_state_size)
    mass = run.mamba_mass
    labels = mass.segments.label.tolist()
    segment_ids = torch.tensor([[labels.index(label) for label in _position_labels(run.token_map)]])
    expected = spec.ssd_pooled_mass(
        step, -torch.exp(mixer.A_log.double()), B.reshape(shape), C.reshape(shape), segment_ids, len(labels)
    )[0]
    torch.testing.assert_close(mass.mass[layer].double(), expected, rtol=0, atol=1e-5)
    assert mass.layers == [i for i, kind in enumerate(small_lab.layer_pattern) if kind == "M"]


def test_grouped_queries_are_means_of_the_position_rows(small_lab):
    prompt = omni_prompt(small_lab)
    rows = small_lab.run(prompt, max_new_tokens=3, capture=["attention_mass", "mamba_mass"])
    grouped = small_lab.run(
        prompt,
        max_new_tokens=3,
        capture=[ol.capture.attention_mass(queries="modality"), ol.capture.mamba_mass(queries="answer")],
    )
    modality = np.asarray(_modalities(rows.token_map))
    attention = grouped.attention_mass
    assert attention.queries == ["text", "image", "video", "audio", "generated"]
    for layer in attention.layers:
        for index, name in enumerate(attention.queries):
            expected = rows.attention_mass.mass[layer][:, torch.from_numpy(modality == name)].mean(1)
            torch.testing.assert_close(attention.mass[layer][:, index], expected, rtol=0, atol=1e-5)
    mamba = grouped.mamba_mass
    assert mamba.queries == ["answer"]
    for layer in mamba.layers:
        expected = rows.mamba_mass.mass[layer][:, torch.from_numpy(modality == "generated")].mean(1)
        torch.testing.assert_close(mamba.mass[layer][:, 0], expected, rtol=0, atol=1e-5)


def _modalities(token_map):
    df = token_map.df[token_map.df.kept].sort_values("position")
    return df.modality.tolist()[:-1]


def test_masses_with_finer_segments_and_a_shortening_reducer(small_lab):
    prompt = omni_prompt(small_lab, frames=8)
    run = small_lab.run(
        prompt,
        max_new_tokens=2,
        reducer=ol.reducers.EVS(0.5),
        capture=[
            "routing",
            ol.capture.attention_mass(segments="tubelet"),
            ol.capture.mamba_mass(segments="modality", layers=[0, 7]),
        ],
    )
    kept = run.token_map.num_positions - 1
    assert run.routing.experts.shape[1] == kept < len(prompt)
    frames = run.attention_mass.segments
    tubelets = sorted(run.token_map.df[run.token_map.df.kept & (run.token_map.df.modality == "video")].tubelet.unique())
    assert frames[frames.modality == "video"].tubelet.tolist() == tubelets
    assert run.mamba_mass.layers == [0, 7]
    assert run.mamba_mass.segments.label.tolist() == ["text", "image", "video", "audio", "generated"]
    for values in (*run.attention_mass.mass.values(), *run.mamba_mass.mass.values()):
        assert values.shape[1] == kept
        torch.testing.assert_close(values.sum(-1), torch.ones(values.shape[:2]), rtol=0, atol=1e-5)
    table = run.attention_mass.to_frame()
    assert {"layer", "query", "segment", "label", "mass"} <= set(table.columns)
    ordered = ol.capture.combine_in_layer_order(run.attention_mass, run.mamba_mass)
    assert [layer for layer, _, _ in ordered] == sorted(run.attention_mass.layers + [0, 7])
    assert all(mass.kind == kind and layer in mass.mass for layer, kind, mass in ordered)
    with pytest.raises(OmniLabInputError, match="frame units overlap.*'tubelet'"):
        ol.capture.attention_mass(segments="frame")


def test_a_capture_kind_of_your_own_registers_in_a_few_lines_and_equals_a_manual_hook(small_lab):
    """The README's example kind: the mean norm of the routed experts' output per modality and MoE layer."""
    from collections import defaultdict
    from functools import partial

    @ol.capture.register
    class RoutedNormByModality(ol.capture.CaptureKind):
        name = "routed_norm_by_modality"

        def setup(self):
            self.norms = defaultdict(list)

        def listeners(self):
            return [(f"llm.layers.{i}.moe.routed", partial(self.listen, i)) for i in self.layers_of_kind("moe")]

        def listen(self, layer, output):
            self.norms[layer].append(output.detach().float().norm(dim=-1).reshape(-1))

        def finish(self, token_map):
            modality = token_map.by_position("modality")
            table = {}
            for layer, norms in self.norms.items():
                norms = torch.cat(norms).numpy()
                table[layer] = {m: float(norms[modality[: len(norms)] == m].mean()) for m in dict.fromkeys(modality)}
            return table

    try:
        prompt = omni_prompt(small_lab)
        run = small_lab.run(
            prompt, max_new_tokens=2, capture=["routed_norm_by_modality"], cache=["llm.layers.*.moe.routed"]
        )
        mine = run.captures["routed_norm_by_modality"]
        assert run.captures.routed_norm_by_modality is mine and sorted(run.captures) == ["routed_norm_by_modality"]
        modality = run.token_map.by_position("modality")
        moe_layers = [info.index for info in layers(small_lab.model) if info.kind == "moe"]
        assert sorted(mine) == moe_layers
        for layer in moe_layers:
            cached = run.cache[f"llm.layers.{layer}.moe.routed"].float().norm(dim=-1).reshape(-1).numpy()
            for name, value in mine[layer].items():
                expected = cached[modality[: len(cached)] == name].mean()
                assert value == pytest.approx(float(expected), rel=1e-6), (layer, name)
        with pytest.raises(OmniLabInputError, match="already registered"):

            @ol.capture.register
            class Another(ol.capture.CaptureKind):
                name = "routed_norm_by_modality"
    finally:
        ol.capture.KINDS.pop("routed_norm_by_modality", None)
