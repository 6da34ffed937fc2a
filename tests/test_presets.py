"""Presets: the released architecture on the meta device, and tiny twins with every block type."""

import time

import pytest
import torch

import omni_lab as ol
from omni_lab.presets import FULL_PATTERN, PRESETS

# Per-component parameter counts of the released checkpoint, from docs/model_layout.md §3
# (derived there from tensor shapes; the total is Megatron-Bridge's count for the real checkpoint).
RELEASE_COUNTS = {
    "llm.embeddings": 352_321_536,
    "llm.lm_head": 352_321_536,
    "llm.norms": 142_464,
    "llm.mamba": 891_070_784,
    "llm.attention": 140_378_112,
    "llm.moe": 29_841_702_912,
    "vision.tower": 653_611_520,
    "vision.projector": 159_912_960,
    "audio.tower": 608_879_616,
    "audio.projector": 15_205_376,
}


def test_full_preset_builds_on_meta_quickly_with_the_release_parameter_count(full_meta_lab):
    started = time.perf_counter()
    lab = ol.load("random:full", device="meta")
    assert time.perf_counter() - started < 10
    assert all(p.is_meta for p in lab.model.parameters())
    counts = lab.parameter_counts()
    for name, expected in RELEASE_COUNTS.items():
        assert counts[name] == expected, name
    assert counts["checkpoint"] == 33_015_546_816
    # transformers' RADIO adds one identity layer-scale vector per residual branch: 32 blocks x 2 x 1280
    assert counts["vision.layer_scale_identity"] == 32 * 2 * 1280
    assert counts["module_total"] == 33_015_546_816 + 81_920
    assert lab.info()["matches_release"]


def test_full_preset_is_the_released_architecture(full_meta_lab):
    config = full_meta_lab.config
    text = config.text_config
    assert full_meta_lab.layer_pattern == FULL_PATTERN
    assert len(FULL_PATTERN) == 52 and FULL_PATTERN.count("M") == 23 and FULL_PATTERN.count("E") == 23
    assert full_meta_lab.info()["attention_layers"] == [5, 12, 19, 26, 33, 42]
    assert (text.hidden_size, text.n_routed_experts, text.num_experts_per_tok, text.n_shared_experts) == (
        2688,
        128,
        6,
        1,
    )
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (32, 2, 128)
    assert text.routed_scaling_factor == 2.5 and text.norm_topk_prob
    layers = full_meta_lab.model.language_model.model.layers
    moe = layers[1].mixer
    assert moe.gate.e_score_correction_bias.shape == (128,)  # sigmoid router with correction bias
    attention = layers[5].mixer
    assert not hasattr(attention, "rotary_emb")  # no positional encoding
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (1280, 32, 16)
    assert vision.num_cls_tokens + vision.num_registers == 10
    assert full_meta_lab.model.vision_model.embeddings.video_patch_projection.in_features == 2 * 768  # tubelets
    audio = config.audio_config
    assert (audio.hidden_size, audio.num_hidden_layers, audio.subsampling_factor, audio.num_mel_bins) == (
        1024,
        24,
        8,
        128,
    )


@pytest.mark.parametrize("name", ["toy", "small"])
def test_tiny_presets_keep_every_block_type_and_tower(name):
    preset = PRESETS[name]
    pattern = preset.text["hybrid_override_pattern"]
    assert {"M", "E", "*"} <= set(pattern)
    lab = ol.load(f"random:{name}")
    model = lab.model
    assert model.vision_model.embeddings.video_patch_projection is not None
    assert model.audio_tower is not None and model.embed_audio is not None
    kinds = {type(layer.mixer).__name__ for layer in model.language_model.model.layers}
    assert kinds == {"NemotronHMamba2Mixer", "NemotronHMoE", "NemotronHAttention"}
    assert preset.text["num_experts_per_tok"] >= 2 and preset.text["n_shared_experts"] == 1


def test_random_presets_are_reproducible_from_the_seed():
    first = ol.load("random:toy", seed=3).model.state_dict()
    second = ol.load("random:toy", seed=3).model.state_dict()
    other = ol.load("random:toy", seed=4).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_loading_a_preset_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ol.load("random:toy")
    assert torch.equal(torch.rand(3), expected)


def test_layer_registry_decodes_the_released_pattern(full_meta_lab):
    from omni_lab.presets import LayerInfo, layers

    registry = layers(full_meta_lab.model)
    assert registry == layers(full_meta_lab.config) == layers(full_meta_lab.config.text_config) == layers(FULL_PATTERN)
    assert [info.index for info in registry] == list(range(52))
    assert [info.index for info in registry if info.kind == "attention"] == [5, 12, 19, 26, 33, 42]
    assert sum(info.kind == "mamba" for info in registry) == 23 and sum(info.kind == "moe" for info in registry) == 23
    assert "".join(info.letter for info in registry) == FULL_PATTERN
    assert registry[5] == LayerInfo(5, "attention", "attn") and registry[5].hook_prefix == "llm.layers.5.attn"
    assert registry[0] == LayerInfo(0, "mamba", "mamba") and registry[1] == LayerInfo(1, "moe", "moe")
    classes = {"mamba": "NemotronHMamba2Mixer", "moe": "NemotronHMoE", "attention": "NemotronHAttention"}
    modules = full_meta_lab.model.language_model.model.layers
    assert all(type(modules[info.index].mixer).__name__ == classes[info.kind] for info in registry)


def test_layer_registry_knows_mlp_layers_and_refuses_unknown_letters():
    from omni_lab.presets import layers

    assert [(info.kind, info.mixer, info.letter) for info in layers("M-*")] == [
        ("mamba", "mamba", "M"),
        ("mlp", "mlp", "-"),
        ("attention", "attn", "*"),
    ]
    with pytest.raises(ValueError, match="X"):
        layers("MEX")
    with pytest.raises(TypeError):
        layers(42)


def test_hook_names_follow_the_registry(small_lab):
    from omni_lab.presets import layers

    names = small_lab.hook_names()
    for info in layers(small_lab.model):
        assert f"{info.hook_prefix}.out" in names
        others = [kind for kind in ("mamba", "moe", "attn", "mlp") if kind != info.mixer]
        assert not any(name.startswith(f"llm.layers.{info.index}.{kind}.") for kind in others for name in names)
