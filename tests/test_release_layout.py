"""A checkpoint written by hand in the release's own layout loads as exactly what was written, at any size.

The checkpoint is built here from the release's file formats (docs/model_layout.md §8): config.json with `llm_config` / `vision_config` (RADIO described by timm `args`, the tower size given by
`args.model_kwargs` as RADIO passes them to timm) / `sound_config`, the release's preprocessor_config.json, and the
release's tensor names (`language_model.backbone.*`, per-expert MoE tensors, `vision_model.radio_model.model.*` with a
fused `attn.qkv`, `mlp1.*`, `sound_encoder.encoder.*`, `sound_projection.*`) in bfloat16, sharded with a
model.safetensors.index.json. Nothing comes from transformers' `save_pretrained` except the tokenizer files.

The expectation is independent of omni-lab's translation: the native config below is written by hand from the same
numbers, the tensors are renamed to transformers' module names by a hand-written table (qkv split in three, experts
stacked), and a model built from that config with those tensors is the reference for the logits.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

import omni_lab as ol
from omni_lab.errors import OmniLabModelError
from omni_lab.sources import load_config, load_processor, released_config_to_native

# Sizes of the hand-written checkpoint: none of them is a default of transformers' configs or of RADIO's ViT-H.
PATTERN = "MEM*E"
TEXT = dict(vocab=1024, hidden=48, heads=4, kv_heads=2, head_dim=12, mamba_heads=4, mamba_head_dim=12, state=8)
TEXT.update(groups=2, conv=4, experts=6, top_k=2, expert=24, shared=40)
VISION = dict(width=48, depth=2, heads=3, mlp_ratio=2.0, patch=16, cpe_max_size=256, register_multiple=8)
TEACHERS = [  # three unique teachers -> 3 CLS tokens; 8 - 3 % 8 = 5 registers (RADIO's ClsToken rule)
    {"name": "clip", "use_summary": True},
    {"name": "siglip", "use_summary": True},
    {"name": "sam", "use_summary": False},
]
NUM_CLS, NUM_REGISTERS = 3, 5
PROJECTOR = 64
AUDIO = dict(hidden=32, heads=2, layers=1, intermediate=64, conv_kernel=5, channels=8, mels=64, projection=40)
IMAGE_BUDGET = dict(min_num_patches=16, max_num_patches=144, max_model_len=2048)
VIDEO_BUDGET = dict(video_target_num_patches=36, video_maintain_aspect_ratio=False)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def released_config() -> dict:
    """config.json as the release writes it (remote-code model type, legacy names, timm `args`)."""
    t = TEXT
    return {
        "architectures": ["NemotronH_Nano_Omni_Reasoning_V3"],
        "model_type": "NemotronH_Nano_Omni_Reasoning_V3",
        "auto_map": {"AutoConfig": "configuration.NemotronH_Nano_Omni_Reasoning_V3_Config"},
        "torch_dtype": "bfloat16",
        "max_sequence_length": 4096,
        "force_image_size": 512,
        "patch_size": VISION["patch"],
        "downsample_ratio": 0.5,
        "use_thumbnail": True,
        "ps_version": "v2",
        "template": "n5h_5p5_nanov2",
        "image_tag_type": "internvl",
        "vit_hidden_size": VISION["width"],
        "projector_hidden_size": PROJECTOR,
        "norm_mean": CLIP_MEAN,
        "norm_std": CLIP_STD,
        "video_pruning_rate": 0.6,
        "video_temporal_patch_size": 2,
        "eos_token_id": 11,
        "img_context_token": "<image>",
        "img_context_token_id": 18,
        "video_context_token": "<video>",
        "video_context_token_id": 21,
        "img_start_token": "<img>",
        "img_end_token": "</img>",
        "sound_context_token": "<so_embedding>",
        "sound_context_token_id": 27,
        "llm_config": {
            "model_type": "nemotron_h",
            "architectures": ["NemotronHForCausalLM"],
            "vocab_size": t["vocab"],
            "hidden_size": t["hidden"],
            "hybrid_override_pattern": PATTERN,
            "num_hidden_layers": len(PATTERN),
            "num_attention_heads": t["heads"],
            "num_key_value_heads": t["kv_heads"],
            "head_dim": t["head_dim"],
            "rope_theta": 10000,
            "partial_rotary_factor": 1.0,
            "max_position_embeddings": 4096,
            "mamba_num_heads": t["mamba_heads"],
            "mamba_head_dim": t["mamba_head_dim"],
            "ssm_state_size": t["state"],
            "n_groups": t["groups"],
            "conv_kernel": t["conv"],
            "expand": 2,
            "chunk_size": 16,
            "use_conv_bias": True,
            "mamba_proj_bias": False,
            "mamba_hidden_act": "silu",
            "time_step_min": 0.001,
            "time_step_max": 0.1,
            "time_step_floor": 0.0001,
            "time_step_limit": [0.0, 1e30],
            "n_routed_experts": t["experts"],
            "num_experts_per_tok": t["top_k"],
            "moe_intermediate_size": t["expert"],
            "n_shared_experts": 1,
            "moe_shared_expert_intermediate_size": t["shared"],
            "norm_topk_prob": True,
            "routed_scaling_factor": 2.5,
            "n_group": 1,
            "topk_group": 1,
            "intermediate_size": t["expert"],
            "mlp_hidden_act": "relu2",
            "mlp_bias": False,
            "norm_eps": 1e-5,
            "layer_norm_epsilon": 1e-5,
            "residual_in_fp32": False,
            "rescale_prenorm_residual": True,
            "attention_bias": False,
            "use_bias": False,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 11,
            "pad_token_id": 0,
        },
        "vision_config": {
            "version": "c-radio_v4-h",
            "architectures": ["RADIOModel"],
            "auto_map": {"AutoConfig": "nvidia/C-RADIOv4-H--hf_model.RADIOConfig"},
            "patch_size": VISION["patch"],
            "max_resolution": 2048,  # RADIO's own bound; the CPE table comes from args.cpe_max_size
            "preferred_resolution": [768, 768],
            "vitdet_window_size": None,
            "video_temporal_patch_size": 2,
            "separate_video_embedder": True,
            "video_prompt_version": 2,
            **VIDEO_BUDGET,
            "args": {
                "model": "vit_huge_patch16_224",  # the release's name; model_kwargs (below) resize it, as in timm
                "model_kwargs": {
                    "embed_dim": VISION["width"],
                    "depth": VISION["depth"],
                    "num_heads": VISION["heads"],
                    "mlp_ratio": VISION["mlp_ratio"],
                    "weight_init": "skip",
                },
                "cpe_max_size": VISION["cpe_max_size"],
                "register_multiple": VISION["register_multiple"],
                "cls_token_per_teacher": True,
                "teachers": TEACHERS,
                "model_norm": False,
                "min_num_patches": 1024,  # vLLM's copy; the HF processor reads preprocessor_config.json
                "max_num_patches": 13312,
                "in_chans": None,
                "drop_path": 0.0,
                "lr_base": 1e-3,
            },
        },
        "sound_config": {
            "model_type": "parakeet",
            "hidden_size": AUDIO["hidden"],
            "num_attention_heads": AUDIO["heads"],
            "num_hidden_layers": AUDIO["layers"],
            "intermediate_size": AUDIO["intermediate"],
            "conv_kernel_size": AUDIO["conv_kernel"],
            "convolution_bias": False,
            "subsampling_conv_channels": AUDIO["channels"],
            "subsampling_conv_kernel_size": 3,
            "subsampling_conv_stride": 2,
            "subsampling_factor": 8,
            "num_mel_bins": AUDIO["mels"],
            "projection_hidden_size": AUDIO["projection"],
            "projection_bias": False,
            "sampling_rate": 16000,
        },
    }


def released_preprocessor_config() -> dict:
    """preprocessor_config.json as the release writes it (remote-code class names, `norm_mean` / `norm_std`)."""
    return {
        "image_processor_type": "NemotronH_Nano_Omni_Reasoning_V3ImageProcessor",
        "auto_map": {
            "AutoImageProcessor": "image_processing.NemotronH_Nano_Omni_Reasoning_V3ImageProcessor",
            "AutoVideoProcessor": "video_processing.NemotronH_Nano_Omni_Reasoning_V3VideoProcessor",
            "AutoProcessor": "processing.NemotronH_Nano_Omni_Reasoning_V3Processor",
        },
        "patch_size": VISION["patch"],
        "downsample_ratio": 0.5,
        "norm_mean": CLIP_MEAN,
        "norm_std": CLIP_STD,
        **IMAGE_BUDGET,
    }


def release_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint under the release's name and shape (docs/model_layout.md §8), bfloat16 like the release.

    Shapes follow the spec's formulas from the sizes above, not any model instance.
    """
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.05, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=generator) * scale).to(dtype)

    def norm(n):
        return (1.0 + torch.randn(n, generator=generator) * 0.1).to(torch.bfloat16)

    t, v, a = TEXT, VISION, AUDIO
    d = t["hidden"]
    inner = t["mamba_heads"] * t["mamba_head_dim"]
    conv_channels = inner + 2 * t["groups"] * t["state"]
    tensors = {"language_model.backbone.embeddings.weight": rand(t["vocab"], d, scale=0.5)}
    for i, kind in enumerate(PATTERN):
        layer = f"language_model.backbone.layers.{i}"
        tensors[f"{layer}.norm.weight"] = norm(d)
        mixer = f"{layer}.mixer"
        if kind == "M":
            tensors[f"{mixer}.in_proj.weight"] = rand(inner + conv_channels + t["mamba_heads"], d)
            tensors[f"{mixer}.conv1d.weight"] = rand(conv_channels, 1, t["conv"], scale=0.3)
            tensors[f"{mixer}.conv1d.bias"] = rand(conv_channels)
            tensors[f"{mixer}.A_log"] = torch.log(torch.arange(1, t["mamba_heads"] + 1).float()).to(torch.bfloat16)
            tensors[f"{mixer}.D"] = norm(t["mamba_heads"])
            tensors[f"{mixer}.dt_bias"] = rand(t["mamba_heads"], scale=0.5)
            tensors[f"{mixer}.norm.weight"] = norm(inner)
            tensors[f"{mixer}.out_proj.weight"] = rand(d, inner)
        elif kind == "*":
            tensors[f"{mixer}.q_proj.weight"] = rand(t["heads"] * t["head_dim"], d)
            tensors[f"{mixer}.k_proj.weight"] = rand(t["kv_heads"] * t["head_dim"], d)
            tensors[f"{mixer}.v_proj.weight"] = rand(t["kv_heads"] * t["head_dim"], d)
            tensors[f"{mixer}.o_proj.weight"] = rand(d, t["heads"] * t["head_dim"])
        else:
            tensors[f"{mixer}.gate.weight"] = rand(t["experts"], d, scale=0.3)
            tensors[f"{mixer}.gate.e_score_correction_bias"] = rand(t["experts"], scale=0.1, dtype=torch.float32)
            for e in range(t["experts"]):
                tensors[f"{mixer}.experts.{e}.up_proj.weight"] = rand(t["expert"], d, scale=0.2)
                tensors[f"{mixer}.experts.{e}.down_proj.weight"] = rand(d, t["expert"], scale=0.2)
            tensors[f"{mixer}.shared_experts.up_proj.weight"] = rand(t["shared"], d, scale=0.2)
            tensors[f"{mixer}.shared_experts.down_proj.weight"] = rand(d, t["shared"], scale=0.2)
    tensors["language_model.backbone.norm_f.weight"] = norm(d)
    tensors["language_model.lm_head.weight"] = rand(t["vocab"], d, scale=0.3)

    w, patch_dim = v["width"], 3 * v["patch"] ** 2
    radio = "vision_model.radio_model"
    tensors[f"{radio}.input_conditioner.norm_mean"] = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    tensors[f"{radio}.input_conditioner.norm_std"] = torch.tensor(CLIP_STD).view(3, 1, 1)
    generator_prefix = f"{radio}.model.patch_generator"
    tensors[f"{generator_prefix}.cls_token.token"] = rand(NUM_CLS + NUM_REGISTERS, w, scale=0.5)
    tensors[f"{generator_prefix}.embedder.weight"] = rand(w, patch_dim)
    tensors[f"{generator_prefix}.video_embedder.weight"] = rand(w, 2 * patch_dim)
    tensors[f"{generator_prefix}.pos_embed"] = rand(1, (v["cpe_max_size"] // v["patch"]) ** 2, w, scale=0.5)
    hidden = int(w * v["mlp_ratio"])
    for i in range(v["depth"]):
        block = f"{radio}.model.blocks.{i}"
        for name in ("norm1", "norm2"):
            tensors[f"{block}.{name}.weight"], tensors[f"{block}.{name}.bias"] = norm(w), rand(w)
        tensors[f"{block}.attn.qkv.weight"], tensors[f"{block}.attn.qkv.bias"] = rand(3 * w, w, scale=0.2), rand(3 * w)
        tensors[f"{block}.attn.proj.weight"], tensors[f"{block}.attn.proj.bias"] = rand(w, w, scale=0.2), rand(w)
        tensors[f"{block}.mlp.fc1.weight"], tensors[f"{block}.mlp.fc1.bias"] = rand(hidden, w, scale=0.2), rand(hidden)
        tensors[f"{block}.mlp.fc2.weight"], tensors[f"{block}.mlp.fc2.bias"] = rand(w, hidden, scale=0.2), rand(w)
    tensors["mlp1.0.weight"] = norm(4 * w)
    tensors["mlp1.1.weight"] = rand(PROJECTOR, 4 * w, scale=0.2)
    tensors["mlp1.3.weight"] = rand(d, PROJECTOR, scale=0.2)

    h, c = a["hidden"], a["channels"]
    encoder = "sound_encoder.encoder"
    tensors[f"{encoder}.subsampling.layers.0.weight"], tensors[f"{encoder}.subsampling.layers.0.bias"] = (
        rand(c, 1, 3, 3, scale=0.3),
        rand(c),
    )
    for index in (2, 5):  # depthwise 3x3
        tensors[f"{encoder}.subsampling.layers.{index}.weight"] = rand(c, 1, 3, 3, scale=0.3)
        tensors[f"{encoder}.subsampling.layers.{index}.bias"] = rand(c)
    for index in (3, 6):  # pointwise 1x1
        tensors[f"{encoder}.subsampling.layers.{index}.weight"] = rand(c, c, 1, 1, scale=0.3)
        tensors[f"{encoder}.subsampling.layers.{index}.bias"] = rand(c)
    tensors[f"{encoder}.subsampling.linear.weight"] = rand(h, c * a["mels"] // 8, scale=0.1)
    tensors[f"{encoder}.subsampling.linear.bias"] = rand(h)
    head_dim = h // a["heads"]
    for i in range(a["layers"]):
        layer = f"{encoder}.layers.{i}"
        for ff in ("feed_forward1", "feed_forward2"):
            tensors[f"{layer}.{ff}.linear1.weight"] = rand(a["intermediate"], h, scale=0.2)
            tensors[f"{layer}.{ff}.linear2.weight"] = rand(h, a["intermediate"], scale=0.2)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "relative_k_proj"):
            tensors[f"{layer}.self_attn.{name}.weight"] = rand(h, h, scale=0.2)
        tensors[f"{layer}.self_attn.bias_u"] = rand(a["heads"], head_dim)
        tensors[f"{layer}.self_attn.bias_v"] = rand(a["heads"], head_dim)
        tensors[f"{layer}.conv.pointwise_conv1.weight"] = rand(2 * h, h, 1, scale=0.2)
        tensors[f"{layer}.conv.depthwise_conv.weight"] = rand(h, 1, a["conv_kernel"], scale=0.3)
        tensors[f"{layer}.conv.norm.weight"], tensors[f"{layer}.conv.norm.bias"] = norm(h), rand(h)
        tensors[f"{layer}.conv.norm.running_mean"] = rand(h)
        tensors[f"{layer}.conv.norm.running_var"] = (1.0 + torch.rand(h, generator=generator)).to(torch.bfloat16)
        tensors[f"{layer}.conv.norm.num_batches_tracked"] = torch.tensor(1234, dtype=torch.int64)
        tensors[f"{layer}.conv.pointwise_conv2.weight"] = rand(h, h, 1, scale=0.2)
        for name in ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2", "norm_out"):
            tensors[f"{layer}.{name}.weight"], tensors[f"{layer}.{name}.bias"] = norm(h), rand(h)
    tensors[f"{encoder}.feature_extractor.featurizer.fb"] = rand(1, a["mels"], 257, dtype=torch.float32)
    tensors[f"{encoder}.feature_extractor.featurizer.window"] = torch.hann_window(400, periodic=False)
    tensors["sound_projection.norm.weight"] = norm(h)
    tensors["sound_projection.linear1.weight"] = rand(a["projection"], h, scale=0.2)
    tensors["sound_projection.linear2.weight"] = rand(d, a["projection"], scale=0.2)
    return tensors


# Release name -> transformers module name, written from the two layouts (docs/model_layout.md §8 and the module tree of
# transformers' NemotronH_Omni_Reasoning_V3); applied in order, first match wins.
RENAMES = [
    ("language_model.backbone.", "language_model.model."),
    ("vision_model.radio_model.model.patch_generator.cls_token.token", "vision_model.embeddings.cls_register_token"),
    (
        "vision_model.radio_model.model.patch_generator.video_embedder.",
        "vision_model.embeddings.video_patch_projection.",
    ),
    ("vision_model.radio_model.model.patch_generator.embedder.", "vision_model.embeddings.patch_projection."),
    ("vision_model.radio_model.model.patch_generator.pos_embed", "vision_model.embeddings.position_embedding"),
    ("vision_model.radio_model.model.blocks.", "vision_model.encoder.layer."),
    ("mlp1.0.", "multi_modal_projector.layer_norm."),
    ("mlp1.1.", "multi_modal_projector.linear_1."),
    ("mlp1.3.", "multi_modal_projector.linear_2."),
    ("sound_encoder.encoder.", "audio_tower."),
    ("sound_projection.norm.", "embed_audio.layer_norm."),
    ("sound_projection.linear1.", "embed_audio.linear_1."),
    ("sound_projection.linear2.", "embed_audio.linear_2."),
]
# Release tensors the model has no place for: the processor normalises pixels; the mel filters are recomputed.
NOT_IN_MODEL = ("vision_model.radio_model.input_conditioner.", "sound_encoder.encoder.feature_extractor.")


def expected_native_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release tensors under transformers' names, in float32: qkv split in three, routed experts stacked."""
    native, experts = {}, {}
    for name, tensor in tensors.items():
        if name.startswith(NOT_IN_MODEL):
            continue
        for old, new in RENAMES:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        tensor = tensor if tensor.dtype == torch.int64 else tensor.float()
        if ".attn.qkv." in name:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                native[name.replace("attn.qkv", f"attention.{part}")] = chunk
        elif ".attn.proj." in name:
            native[name.replace("attn.proj", "attention.o_proj")] = tensor
        elif ".mixer.experts." in name:
            prefix, rest = name.split(".mixer.experts.")
            expert, projection = rest.split(".")[:2]
            experts.setdefault(f"{prefix}.mixer.experts.{projection}", {})[int(expert)] = tensor
        else:
            native[name] = tensor
    for name, by_index in experts.items():
        native[name] = torch.stack([by_index[i] for i in sorted(by_index)])
    return native


def native_config():
    """transformers' config for the same checkpoint, written by hand in its native field names."""
    from transformers import NemotronH_Omni_Reasoning_V3_Config

    t, v, a = TEXT, VISION, AUDIO
    return NemotronH_Omni_Reasoning_V3_Config(
        text_config=dict(
            vocab_size=t["vocab"],
            hidden_size=t["hidden"],
            hybrid_override_pattern=PATTERN,
            num_hidden_layers=len(PATTERN),
            num_attention_heads=t["heads"],
            num_key_value_heads=t["kv_heads"],
            head_dim=t["head_dim"],
            mamba_num_heads=t["mamba_heads"],
            mamba_head_dim=t["mamba_head_dim"],
            ssm_state_size=t["state"],
            n_groups=t["groups"],
            conv_kernel=t["conv"],
            chunk_size=16,
            n_routed_experts=t["experts"],
            num_experts_per_tok=t["top_k"],
            moe_intermediate_size=t["expert"],
            n_shared_experts=1,
            moe_shared_expert_intermediate_size=t["shared"],
            intermediate_size=t["expert"],
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            mlp_hidden_act="relu2",
            use_conv_bias=True,
            mamba_proj_bias=False,
            layer_norm_epsilon=1e-5,
            time_step_limit=(0.0, 1e30),
            tie_word_embeddings=False,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=11,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=v["width"],
            num_hidden_layers=v["depth"],
            num_attention_heads=v["heads"],
            mlp_ratio=v["mlp_ratio"],
            patch_size=v["patch"],
            max_img_size=v["cpe_max_size"],
            num_cls_tokens=NUM_CLS,
            num_registers=NUM_REGISTERS,
            summary_idxs=[0, 1],
            video_temporal_patch_size=2,
            norm_mean=CLIP_MEAN,
            norm_std=CLIP_STD,
        ),
        audio_config=dict(
            hidden_size=a["hidden"],
            num_hidden_layers=a["layers"],
            num_attention_heads=a["heads"],
            intermediate_size=a["intermediate"],
            conv_kernel_size=a["conv_kernel"],
            convolution_bias=False,
            subsampling_conv_channels=a["channels"],
            subsampling_conv_kernel_size=3,
            subsampling_conv_stride=2,
            subsampling_factor=8,
            num_mel_bins=a["mels"],
            projection_hidden_size=a["projection"],
            projection_bias=False,
            attention_bias=False,
            scale_input=False,
        ),
        projector_hidden_size=PROJECTOR,
        vision_hidden_size=v["width"],
        downsample_ratio=0.5,
        video_pruning_rate=0.6,
        video_temporal_patch_size=2,
        image_token_id=18,
        video_token_id=21,
        audio_token_id=27,
    )


def write_release_checkpoint(folder, tensors) -> None:
    """config.json, preprocessor_config.json, tokenizer files and three safetensors shards with their index."""
    from omni_lab.tokenizer import build_tokenizer

    (folder / "config.json").write_text(json.dumps(released_config(), indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(released_preprocessor_config(), indent=2))
    build_tokenizer(TEXT["vocab"]).save_pretrained(folder)
    shards = {
        "model-00001-of-00003.safetensors": lambda n: n.startswith("language_model.backbone.layers."),
        "model-00002-of-00003.safetensors": lambda n: n.startswith("language_model."),
        "model-00003-of-00003.safetensors": lambda n: True,
    }
    weight_map, remaining = {}, dict(tensors)
    for shard, belongs in shards.items():
        part = {name: tensor for name, tensor in remaining.items() if belongs(name)}
        for name in part:
            del remaining[name]
        save_file(
            {name: tensor.contiguous() for name, tensor in part.items()}, folder / shard, metadata={"format": "pt"}
        )
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(folder, tensors written, lab loaded from the folder)."""
    folder = tmp_path_factory.mktemp("release-layout")
    tensors = release_tensors()
    write_release_checkpoint(folder, tensors)
    return folder, tensors, ol.load(str(folder), progress=False)


@pytest.fixture(scope="module")
def reference_model(release):
    """transformers' model built from the hand-written native config with the hand-renamed tensors loaded."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    _, tensors, _ = release
    model = NemotronH_Omni_Reasoning_V3(native_config()).eval()
    missing, unexpected = model.load_state_dict(expected_native_state(tensors), strict=False)
    assert not unexpected, unexpected
    # C-RADIO has no LayerScale (identity, 1.0) and the RADIO summary indices are a buffer the release does not store.
    assert all("layer_scale" in name or name == "vision_model.summary_idxs" for name in missing), missing
    return model


def test_sharded_index_names_only_release_tensors(release):
    folder, tensors, _ = release
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(tensors) and len(set(weight_map.values())) == 3
    assert "language_model.backbone.layers.1.mixer.experts.5.down_proj.weight" in weight_map
    assert "vision_model.radio_model.model.blocks.1.attn.qkv.weight" in weight_map


def test_every_parameter_is_the_tensor_written(release):
    _, tensors, lab = release
    expected = expected_native_state(tensors)
    state = lab.model.state_dict()
    assert set(expected) <= set(state), sorted(set(expected) - set(state))
    for name, tensor in expected.items():
        assert state[name].shape == tensor.shape, name
        assert torch.equal(state[name].to(tensor.dtype), tensor), f"{name} differs from the written tensor"
    others = set(state) - set(expected)  # what the release does not store: identity LayerScale, RADIO summary ids
    assert all(
        name.endswith("layer_scale1.lambda1") or name.endswith("layer_scale2.lambda1")
        for name in others - {"vision_model.summary_idxs"}
    )
    for name in others - {"vision_model.summary_idxs"}:
        assert torch.equal(state[name], torch.ones_like(state[name])), name
    assert state["vision_model.summary_idxs"].tolist() == [0, 1]  # teachers with use_summary


def test_architecture_is_the_checkpoint_size_not_the_release_default(release):
    _, _, lab = release
    config = lab.config
    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (48, 2, 3)
    assert vision.mlp_ratio == VISION["mlp_ratio"] and vision.max_img_size == VISION["cpe_max_size"]
    assert (vision.num_cls_tokens, vision.num_registers) == (NUM_CLS, NUM_REGISTERS)
    assert config.vision_hidden_size == 48 and config.projector_hidden_size == PROJECTOR
    assert config.video_pruning_rate == 0.6 and config.video_temporal_patch_size == 2
    assert (config.image_token_id, config.video_token_id, config.audio_token_id) == (18, 21, 27)
    assert config.text_config.hybrid_override_pattern == PATTERN
    assert config.audio_config.conv_kernel_size == AUDIO["conv_kernel"]
    assert config.audio_config.num_mel_bins == AUDIO["mels"]
    assert not config.audio_config.scale_input and not config.audio_config.attention_bias
    native = native_config()
    for sub in ("text_config", "vision_config", "audio_config"):
        ours, theirs = getattr(config, sub).to_dict(), getattr(native, sub).to_dict()
        compared = set(theirs) - {"transformers_version", "dtype"}  # the load dtype is the caller's choice
        differing = {k: (ours.get(k), theirs[k]) for k in compared if ours.get(k) != theirs[k]}
        assert not differing, f"{sub}: {differing}"


def test_processor_budgets_are_the_checkpoint_budgets(release):
    _, _, lab = release
    processor = lab.processor
    image, video = processor.image_processor, processor.video_processor
    assert (image.min_num_patches, image.max_num_patches, image.max_model_len) == tuple(IMAGE_BUDGET.values())
    assert (image.patch_size, image.downsample_ratio) == (16, 0.5)
    assert list(image.image_mean) == CLIP_MEAN and list(image.image_std) == CLIP_STD
    assert video.video_target_num_patches == VIDEO_BUDGET["video_target_num_patches"]
    assert video.video_maintain_aspect_ratio is VIDEO_BUDGET["video_maintain_aspect_ratio"]
    assert (video.patch_size, video.downsample_ratio, video.temporal_patch_size) == (16, 0.5, 2)
    assert list(video.norm_mean) == CLIP_MEAN and list(video.norm_std) == CLIP_STD
    assert processor.video_temporal_patch_dim == 2
    assert (processor.audio_sampling_rate, processor.audio_subsampling_factor, processor.audio_hop_length) == (
        16000,
        8,
        160,
    )
    features = processor.feature_extractor
    assert (features.feature_size, features.sampling_rate, features.hop_length) == (AUDIO["mels"], 16000, 160)
    budgets = lab.info()["budgets"]
    assert budgets["image_tokens"] == [16 // 4, 144 // 4] and budgets["video_tokens_per_tubelet"] == 36 // 4


def test_video_frames_take_the_checkpoint_budget(release):
    """36 patches, aspect ratio not kept: a 6 x 6 patch grid (96 x 96 px) for any frame, 9 tokens per tubelet."""
    from omni_lab.media import VideoClip
    from tests import synth

    _, _, lab = release
    prompt = lab.prompt("Which way?", video=VideoClip(synth.moving_square_frames(4, 160, 64), fps=4.0))
    pixels = prompt.inputs["pixel_values_videos"]
    assert tuple(pixels.shape[-2:]) == (96, 96)
    assert int((prompt.input_ids == 18).sum()) == 2 * 9  # two tubelets


def test_logits_equal_the_reference_model(release, reference_model):
    from omni_lab.media import VideoClip
    from tests import synth

    _, _, lab = release
    prompt = lab.prompt(
        "What is going on here?",
        images=[synth.image_array(150, 100, seed=1)],
        audio=(synth.tone(1.3, frequency=660.0), 16000),
    )
    with torch.inference_mode():
        reference = reference_model(**prompt.inputs).logits.float()
        loaded = lab.model(**prompt.inputs).logits.float()
    torch.testing.assert_close(loaded, reference, rtol=0, atol=0)
    ours = lab.logits(prompt)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)  # omni-lab's pipeline, as in test_parity
    assert reference[0, -1].std() > 0.1  # the written weights give informative logits, not a flat row
    video = lab.prompt("Which way?", video=VideoClip(synth.moving_square_frames(5, 96, 64), fps=5.0))
    with torch.inference_mode():
        torch.testing.assert_close(
            lab.model(**video.inputs).logits.float(), reference_model(**video.inputs).logits.float(), rtol=0, atol=0
        )


def test_the_processor_files_win_over_config_json(tmp_path):
    """What the remote processor reads (preprocessor / processor_config.json) overrides the config.json copies."""
    from omni_lab.tokenizer import build_tokenizer

    (tmp_path / "config.json").write_text(json.dumps(released_config()))
    preprocessor = {
        **released_preprocessor_config(),
        "video_target_num_patches": 64,
        "video_maintain_aspect_ratio": True,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    processor_config = {"processor_class": "NemotronH_Nano_Omni_Reasoning_V3Processor", "audio_hop_length": 320}
    (tmp_path / "processor_config.json").write_text(json.dumps(processor_config))
    build_tokenizer(TEXT["vocab"]).save_pretrained(tmp_path)
    processor = load_processor(tmp_path, load_config(tmp_path))
    video = processor.video_processor
    assert (video.video_target_num_patches, video.video_maintain_aspect_ratio) == (64, True)
    assert processor.audio_hop_length == 320 and processor.feature_extractor.hop_length == 320
    assert processor.image_processor.max_num_patches == IMAGE_BUDGET["max_num_patches"]


def test_config_translation_reads_the_native_fields_from_the_released_ones():
    native = released_config_to_native(released_config())
    vision = native["vision_config"]
    assert (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"]) == (48, 2, 3)
    assert vision["summary_idxs"] == [0, 1]
    assert native["vision_hidden_size"] == 48 and native["dtype"] == "bfloat16"
    assert "model_type" not in native["audio_config"] and "architectures" not in native["text_config"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["vision_config"]["args"]["model_kwargs"].update(init_values=1e-5), "init_values"),
        (lambda c: c["vision_config"]["args"]["model_kwargs"].update(qk_norm=True), "qk_norm"),
        (lambda c: c["vision_config"]["args"].update(model_norm=True), "model_norm"),
        (lambda c: c["vision_config"].update(vitdet_window_size=8), "vitdet_window_size"),
        (lambda c: c["vision_config"]["args"].update(model="eradio"), "eradio"),
        (lambda c: c.update(vit_hidden_size=1280), "vit_hidden_size"),
        (lambda c: c["vision_config"].update(video_temporal_patch_size=4), "video_temporal_patch_size"),
        (lambda c: c["vision_config"]["args"]["model_kwargs"].update(block_fn="ParallelBlock"), "block_fn"),
        (lambda c: c["vision_config"]["args"].update(cpe_max_size=None), "cpe_max_size"),
        (lambda c: c.update(ps_version="v1"), "ps_version"),
    ],
)
def test_what_transformers_cannot_build_is_refused_by_name(tmp_path, change, message):
    config = released_config()
    change(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(OmniLabModelError, match=message):
        load_config(tmp_path)
