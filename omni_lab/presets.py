"""Architecture presets: the released Nemotron 3 Nano Omni (`full`) and two tiny twins (`small`, `toy`).

`full` is the released architecture, value for value (docs/model_layout.md §2-8):
52 layers `MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME`, hidden 2688, 128 routed experts (top-6) plus a
shared expert, sigmoid router with correction bias, no positional encoding; C-RADIO ViT-H/16 (4 CLS + 6 register
tokens, 2,048-px CPE table, 2-frame tubelet video embedder); Parakeet 24 x 1024; both projectors. Its processors use
the release's budgets (1,024-13,312 patches per image, 1,024 patches per video frame).

`toy` and `small` keep every mechanism (Mamba-2, MoE with shared expert and correction bias, attention layers; all
three towers with pixel shuffle, tubelets and 8x audio subsampling) at sizes that run in well under a second on two
CPU cores, with processor budgets scaled down to match.

`layers(model)` is the layer registry: the one place the release's pattern letters (M = Mamba-2, E = MoE,
* = attention, - = MLP) are decoded into `LayerInfo(index, kind, mixer)`. The config builders (`text_config`,
`vision_config`, `audio_config`, `image_processor_config`, `video_processor_config`) are public so other
architectures (the toy twin's, omni_lab/toy/architecture.py) are written with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FULL_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
# The release's layer letters (`hybrid_override_pattern`) -> (kind, the mixer's part of the hook names).
LAYER_LETTERS = {"M": ("mamba", "mamba"), "E": ("moe", "moe"), "*": ("attention", "attn"), "-": ("mlp", "mlp")}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Parameters in the released safetensors (Megatron-Bridge's count, docs/model_layout.md §3).
RELEASED_PARAMETER_COUNT = 33_015_546_816


@dataclass(frozen=True)
class Preset:
    """Everything needed to build one architecture and its processors offline."""

    name: str
    text: dict
    vision: dict
    audio: dict
    projector_hidden_size: int
    image_processor: dict
    video_processor: dict
    video_pruning_rate: float = 0.7  # the release's config.json value (docs/model_layout.md §5)
    notes: str = ""
    top: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the LLM, as the layer registry describes it.

    Attributes:
        index: the LLM's own layer number (0-51 on the released model).
        kind: "mamba" (Mamba-2), "moe" (mixture of experts), "attention" or "mlp".
        mixer: the mixer's part of the stable hook names: "mamba", "moe", "attn" or "mlp"
            (`llm.layers.{index}.{mixer}.out`).
    """

    index: int
    kind: str
    mixer: str

    @property
    def letter(self) -> str:
        """The release's letter for this layer in `hybrid_override_pattern` (M, E, * or -)."""
        return next(letter for letter, (kind, _) in LAYER_LETTERS.items() if kind == self.kind)

    @property
    def hook_prefix(self) -> str:
        """`llm.layers.{index}.{mixer}`: the start of this layer's mixer hook names."""
        return f"llm.layers.{self.index}.{self.mixer}"


def layers(model) -> list[LayerInfo]:
    """The layer registry: every LLM layer of `model` in order, with its kind and hook-name part.

    The one place the release's pattern letters are decoded.

    Args:
        model: a transformers model, its config, its `text_config`, or a `hybrid_override_pattern` string.
    Returns:
        `[LayerInfo(index, kind, mixer)]`, one per layer.
    """
    pattern = model if isinstance(model, str) else None
    config = getattr(model, "config", model)
    config = getattr(config, "text_config", None) or config
    pattern = pattern if pattern is not None else getattr(config, "hybrid_override_pattern", None)
    if pattern is None:
        raise TypeError(f"layers() takes a model, a config or a layer pattern, got {type(model).__name__}")
    unknown = set(pattern) - set(LAYER_LETTERS)
    if unknown:
        raise ValueError(f"layer pattern {pattern!r} has letters {sorted(unknown)} outside {sorted(LAYER_LETTERS)}")
    return [LayerInfo(index, *LAYER_LETTERS[letter]) for index, letter in enumerate(pattern)]


def text_config(
    hidden,
    pattern,
    heads,
    kv_heads,
    head_dim,
    mamba_heads,
    mamba_head_dim,
    state,
    groups,
    experts,
    top_k,
    expert_size,
    shared_size,
    vocab,
    context,
    chunk=128,
) -> dict:
    """The LLM's `text_config` (NemotronH) for a preset: sizes given, everything else as the release sets it.

    Args:
        hidden: model width; pattern: `hybrid_override_pattern` (M = Mamba-2, E = MoE, * = attention, - = MLP).
        heads, kv_heads, head_dim: attention (grouped-query) shape.
        mamba_heads, mamba_head_dim, state, groups: Mamba-2 heads, head size, SSM state size, B/C groups.
        experts, top_k, expert_size, shared_size: routed experts, experts per token, their and the shared
            expert's intermediate size.
        vocab, context: vocabulary size and context length; chunk: the SSD chunk size.
    Returns:
        dict of `NemotronHConfig` keyword arguments.
    """
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        hybrid_override_pattern=pattern,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=context,
        mamba_num_heads=mamba_heads,
        mamba_head_dim=mamba_head_dim,
        ssm_state_size=state,
        n_groups=groups,
        conv_kernel=4,
        chunk_size=chunk,
        n_routed_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=expert_size,
        n_shared_experts=1,
        moe_shared_expert_intermediate_size=shared_size,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        n_group=1,
        topk_group=1,
        intermediate_size=expert_size,
        mlp_hidden_act="relu2",
        use_conv_bias=True,
        mamba_proj_bias=False,
        use_bias=False,
        attention_bias=False,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=[2, 11],
        pad_token_id=0,
        time_step_limit=(0.0, float("inf")),
    )


def vision_config(hidden, layers, heads, max_img_size, cls_tokens, registers) -> dict:
    """The C-RADIO tower's `vision_config`: width, depth, heads, CPE table size, CLS and register tokens.

    Returns:
        dict of RADIO config keyword arguments (16-px patches, 2-frame tubelets, CLIP normalisation).
    """
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=4.0,
        patch_size=16,
        max_img_size=max_img_size,
        num_cls_tokens=cls_tokens,
        num_registers=registers,
        video_temporal_patch_size=2,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        norm_mean=CLIP_MEAN,
        norm_std=CLIP_STD,
    )


def audio_config(hidden, layers, heads, intermediate, sub_channels, projection_hidden) -> dict:
    """The Parakeet FastConformer's `audio_config`: width, depth, heads, FFN size, subsampling channels, projector.

    Returns:
        dict of Parakeet config keyword arguments (8x subsampling of 128-bin mel features, no dropout).
    """
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        conv_kernel_size=9,
        convolution_bias=False,
        subsampling_conv_channels=sub_channels,
        subsampling_conv_kernel_size=3,
        subsampling_conv_stride=2,
        subsampling_factor=8,
        num_mel_bins=128,
        projection_hidden_size=projection_hidden,
        projection_bias=False,
        attention_bias=False,
        scale_input=False,
        dropout=0.0,
        layerdrop=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
    )


def image_processor_config(min_patches, max_patches, context) -> dict:
    """The image processor's budget: `min_patches`..`max_patches` 16-px patches per image, `context` tokens.

    Returns:
        dict of `NemotronH_Omni_Reasoning_V3ImageProcessor` keyword arguments.
    """
    return dict(
        patch_size=16,
        downsample_ratio=0.5,
        min_num_patches=min_patches,
        max_num_patches=max_patches,
        max_model_len=context,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def video_processor_config(target_patches) -> dict:
    """The video processor's budget: `target_patches` 16-px patches per frame, aspect ratio kept.

    Returns:
        dict of `NemotronH_Omni_Reasoning_V3VideoProcessor` keyword arguments.
    """
    return dict(
        patch_size=16,
        downsample_ratio=0.5,
        video_target_num_patches=target_patches,
        video_maintain_aspect_ratio=True,
        temporal_patch_size=2,
        norm_mean=CLIP_MEAN,
        norm_std=CLIP_STD,
    )


PRESETS: dict[str, Preset] = {
    "full": Preset(
        name="full",
        text=text_config(
            hidden=2688,
            pattern=FULL_PATTERN,
            heads=32,
            kv_heads=2,
            head_dim=128,
            mamba_heads=64,
            mamba_head_dim=64,
            state=128,
            groups=8,
            experts=128,
            top_k=6,
            expert_size=1856,
            shared_size=3712,
            vocab=131072,
            context=262144,
        ),
        vision=vision_config(hidden=1280, layers=32, heads=16, max_img_size=2048, cls_tokens=4, registers=6),
        audio=audio_config(
            hidden=1024, layers=24, heads=8, intermediate=4096, sub_channels=256, projection_hidden=4096
        ),
        projector_hidden_size=20480,
        image_processor=image_processor_config(1024, 13312, 16384),
        video_processor=video_processor_config(1024),
        notes="the released Nemotron 3 Nano Omni 30B-A3B architecture",
    ),
    "small": Preset(
        name="small",
        text=text_config(
            hidden=256,
            pattern="MEM*EMEM*EME",
            heads=8,
            kv_heads=2,
            head_dim=32,
            mamba_heads=8,
            mamba_head_dim=32,
            state=32,
            groups=2,
            experts=16,
            top_k=4,
            expert_size=256,
            shared_size=512,
            vocab=1024,
            context=16384,
            chunk=64,
        ),
        vision=vision_config(hidden=128, layers=4, heads=4, max_img_size=1024, cls_tokens=4, registers=6),
        audio=audio_config(hidden=128, layers=4, heads=4, intermediate=512, sub_channels=32, projection_hidden=512),
        projector_hidden_size=1024,
        image_processor=image_processor_config(64, 1024, 16384),
        video_processor=video_processor_config(256),
        notes="every mechanism of the release at ~1/100 width",
    ),
    "toy": Preset(
        name="toy",
        text=text_config(
            hidden=64,
            pattern="MEM*EM*E",
            heads=4,
            kv_heads=2,
            head_dim=16,
            mamba_heads=4,
            mamba_head_dim=16,
            state=16,
            groups=2,
            experts=8,
            top_k=2,
            expert_size=64,
            shared_size=128,
            vocab=1024,
            context=8192,
            chunk=32,
        ),
        vision=vision_config(hidden=32, layers=2, heads=2, max_img_size=512, cls_tokens=2, registers=2),
        audio=audio_config(hidden=32, layers=2, heads=2, intermediate=64, sub_channels=8, projection_hidden=128),
        projector_hidden_size=128,
        image_processor=image_processor_config(16, 256, 8192),
        video_processor=video_processor_config(64),
        notes="the smallest model with every block type; for unit tests",
    ),
}


def build_config(preset: Preset):
    """The transformers `NemotronH_Omni_Reasoning_V3_Config` for a preset."""
    from transformers import NemotronH_Omni_Reasoning_V3_Config

    from .tokenizer import SPECIAL_TOKENS

    ids = {token: token_id for token_id, token in SPECIAL_TOKENS.items()}
    return NemotronH_Omni_Reasoning_V3_Config(
        text_config=dict(preset.text),
        vision_config=dict(preset.vision),
        audio_config=dict(preset.audio),
        projector_hidden_size=preset.projector_hidden_size,
        vision_hidden_size=preset.vision["hidden_size"],
        downsample_ratio=0.5,
        force_image_size=512,
        video_pruning_rate=preset.video_pruning_rate,
        video_temporal_patch_size=2,
        image_token_id=ids["<image>"],
        video_token_id=ids["<video>"],
        audio_token_id=ids["<so_embedding>"],
        **preset.top,
    )


def build_processor(preset: Preset):
    """The model's own processor (image, video, audio, tokenizer, chat template) for a preset, built offline."""
    from transformers import ParakeetFeatureExtractor
    from transformers.models.nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3ImageProcessor,
        NemotronH_Omni_Reasoning_V3Processor,
        NemotronH_Omni_Reasoning_V3VideoProcessor,
    )

    from .tokenizer import build_tokenizer

    tokenizer = build_tokenizer(min(preset.text["vocab_size"], 1024))
    return NemotronH_Omni_Reasoning_V3Processor(
        image_processor=NemotronH_Omni_Reasoning_V3ImageProcessor(**preset.image_processor),
        video_processor=NemotronH_Omni_Reasoning_V3VideoProcessor(**preset.video_processor),
        tokenizer=tokenizer,
        feature_extractor=ParakeetFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160),
        chat_template=tokenizer.chat_template,
    )
