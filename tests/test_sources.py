"""Model sources: checkpoint directories, the released config layout, missing files, quantisation, the hub."""

import json
import shutil

import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabModelError
from omni_lab.presets import PRESETS
from omni_lab.sources import load_config, released_processor_settings

# A config.json in the released layout, transcribed from docs/model_layout.md §2 and §8 (remote-code model type,
# `llm_config`, `sound_config`, the RADIO tower described by timm `args`).
RELEASED_CONFIG = {
    "architectures": ["NemotronH_Nano_Omni_Reasoning_V3"],
    "model_type": "NemotronH_Nano_Omni_Reasoning_V3",
    "auto_map": {"AutoModel": "modeling.NemotronH_Nano_Omni_Reasoning_V3"},
    "torch_dtype": "bfloat16",
    "force_image_size": 512,
    "patch_size": 16,
    "downsample_ratio": 0.5,
    "ps_version": "v2",
    "vit_hidden_size": 1280,
    "projector_hidden_size": 20480,
    "norm_mean": [0.48145466, 0.4578275, 0.40821073],
    "norm_std": [0.26862954, 0.26130258, 0.27577711],
    "video_pruning_rate": 0.7,
    "video_temporal_patch_size": 2,
    "img_context_token_id": 18,
    "video_context_token_id": 131081,
    "sound_context_token_id": 27,
    "llm_config": {
        "model_type": "nemotron_h",
        "vocab_size": 131072,
        "hidden_size": 2688,
        "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
        "num_hidden_layers": 52,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "mamba_num_heads": 64,
        "mamba_head_dim": 64,
        "ssm_state_size": 128,
        "n_groups": 8,
        "conv_kernel": 4,
        "chunk_size": 128,
        "n_routed_experts": 128,
        "num_experts_per_tok": 6,
        "moe_intermediate_size": 1856,
        "n_shared_experts": 1,
        "moe_shared_expert_intermediate_size": 3712,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "n_group": 1,
        "topk_group": 1,
        "intermediate_size": 1856,
        "mlp_hidden_act": "relu2",
        "use_conv_bias": True,
        "mamba_proj_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    },
    "vision_config": {
        "version": "c-radio_v4-h",
        "architectures": ["RADIOModel"],
        "patch_size": 16,
        "max_resolution": 2048,
        "video_target_num_patches": 1024,
        "video_maintain_aspect_ratio": True,
        "video_temporal_patch_size": 2,
        "separate_video_embedder": True,
        "args": {
            "model": "vit_huge_patch16_224",
            "cpe_max_size": 2048,
            "register_multiple": 10,
            "cls_token_per_teacher": True,
            "min_num_patches": 1024,
            "max_num_patches": 13312,
            "teachers": [{"name": "clip"}, {"name": "siglip"}, {"name": "dino_v2"}, {"name": "sam"}, {"name": "clip"}],
        },
    },
    "sound_config": {
        "model_type": "parakeet",
        "hidden_size": 1024,
        "num_attention_heads": 8,
        "num_hidden_layers": 24,
        "intermediate_size": 4096,
        "conv_kernel_size": 9,
        "convolution_bias": False,
        "subsampling_conv_channels": 256,
        "subsampling_conv_kernel_size": 3,
        "subsampling_conv_stride": 2,
        "subsampling_factor": 8,
        "num_mel_bins": 128,
        "projection_hidden_size": 4096,
        "projection_bias": False,
        "sampling_rate": 16000,
    },
}


# preprocessor_config.json of the BF16 release (docs/model_layout.md §8): remote-code class names, the image budget only.
RELEASED_PREPROCESSOR = {
    "image_processor_type": "NemotronH_Nano_Omni_Reasoning_V3ImageProcessor",
    "auto_map": {"AutoProcessor": "processing.NemotronH_Nano_Omni_Reasoning_V3Processor"},
    "patch_size": 16,
    "downsample_ratio": 0.5,
    "norm_mean": [0.48145466, 0.4578275, 0.40821073],
    "norm_std": [0.26862954, 0.26130258, 0.27577711],
    "min_num_patches": 1024,
    "max_num_patches": 13312,
    "max_model_len": 16384,
}


@pytest.fixture(scope="module")
def saved_toy(
    tmp_path_factory,
):
    """random:toy saved with transformers' own save_pretrained (model + processor)."""
    lab = ol.load("random:toy", seed=7)
    folder = tmp_path_factory.mktemp("toy-checkpoint")
    lab.model.save_pretrained(folder)
    lab.processor.save_pretrained(folder)
    return lab, folder


def test_released_config_layout_translates_to_the_released_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    config = load_config(tmp_path)
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    with torch.device("meta"):
        model = NemotronH_Omni_Reasoning_V3(config)
    layer_scale = sum(p.numel() for n, p in model.named_parameters() if "layer_scale" in n)
    assert sum(p.numel() for p in model.parameters()) - layer_scale == 33_015_546_816
    assert config.vision_config.num_cls_tokens == 4 and config.vision_config.num_registers == 6
    assert config.image_token_id == 18 and config.audio_token_id == 27
    assert config.video_pruning_rate == 0.7
    assert config.text_config.hybrid_override_pattern == RELEASED_CONFIG["llm_config"]["hybrid_override_pattern"]


def test_released_budgets_are_the_full_presets_budgets(tmp_path):
    """Read from the release's files (video budget from vision_config, audio from sound_config) = `random:full`."""
    (tmp_path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(RELEASED_PREPROCESSOR))
    settings = released_processor_settings(tmp_path)
    full = PRESETS["full"]
    assert settings["image"] == full.image_processor
    assert settings["video"] == full.video_processor
    assert settings["processor"] == {
        "audio_sampling_rate": 16000,
        "audio_subsampling_factor": 8,
        "audio_hop_length": 160,
        "video_temporal_patch_dim": 2,
    }
    assert settings["features"] == {"feature_size": 128, "sampling_rate": 16000, "hop_length": 160}


def test_checkpoint_directory_round_trip_gives_identical_logits(saved_toy):
    lab, folder = saved_toy
    loaded = ol.load(str(folder), progress=False)
    prompt = lab.prompt("Which way does the square move?", images=[torch.rand(40, 60, 3).numpy()])
    again = loaded.prompt("Which way does the square move?", images=[prompt.images[0]])
    assert torch.equal(prompt.input_ids, again.input_ids)
    torch.testing.assert_close(loaded.logits(again), lab.logits(prompt), rtol=0, atol=0)


def test_missing_files_are_named_with_where_we_looked_and_how_to_get_them(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    with pytest.raises(OmniLabModelError) as error:
        ol.load(str(tmp_path))
    message = str(error.value)
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json", str(tmp_path), "hf download"):
        assert name in message


def test_missing_shard_is_named(tmp_path, saved_toy):
    _, folder = saved_toy
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    (target / "model.safetensors").rename(target / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(OmniLabModelError, match="model-00002-of-00002.safetensors"):
        ol.load(str(target))


def test_pickled_weights_are_refused(tmp_path, saved_toy):
    _, folder = saved_toy
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    with pytest.raises(OmniLabModelError, match="safetensors only"):
        ol.load(str(target))


@pytest.mark.parametrize(("algo", "needs"), [("FP8", "sm89"), ("NVFP4", "Blackwell")])
def test_quantised_checkpoint_on_cpu_says_what_it_needs(tmp_path, saved_toy, algo, needs):
    _, folder = saved_toy
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "modelopt", "quant_algo": algo}
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(OmniLabModelError) as error:
        ol.load(str(target), device="cpu")
    message = str(error.value)
    assert algo in message and needs in message and "BF16" in message and "device='cpu'" in message


def test_hub_id_not_in_the_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OmniLabModelError) as error:
        ol.load("nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16")
    message = str(error.value)
    assert "not in the local Hugging Face cache" in message and "hf download" in message
    assert "allow_download=True" in message


@pytest.mark.parametrize("source", ["random:huge", "no/such/dir", "", "./missing-dir"])
def test_unknown_sources_are_model_errors(source):
    with pytest.raises(OmniLabModelError):
        ol.load(source)


@pytest.mark.parametrize("name", ["toy", "toy-hard"])
def test_toy_never_falls_back_to_random_weights(monkeypatch, tmp_path, name):
    from omni_lab import sources

    monkeypatch.setitem(sources.TWINS, name, tmp_path / "missing")  # an installation without the twin's files
    with pytest.raises(OmniLabModelError, match="random:toy") as error:
        ol.load(name)
    assert str(tmp_path / "missing") in str(error.value) and repr(name) in str(error.value)


def test_a_meta_model_refuses_to_run_with_a_clear_error(full_meta_lab):
    with pytest.raises(OmniLabModelError, match="meta device"):
        full_meta_lab.run("hello")
