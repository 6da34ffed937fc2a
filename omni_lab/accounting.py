"""Release accounting, beside the presets (presets.py holds the released sizes): parameters per component, counted
the way the released checkpoint stores them, and the architecture summary `Lab.info()` and `omni-lab info` print.

    parameter_counts(lab.model)["checkpoint"] == RELEASED_PARAMETER_COUNT   # 33,015,546,816 for random:full
"""

from __future__ import annotations

from .presets import RELEASED_PARAMETER_COUNT, layers


def parameter_counts(model) -> dict[str, int]:
    """Parameters per component, and what a checkpoint stores.

    transformers' RADIO blocks carry identity layer-scale vectors (`layer_scale{1,2}.lambda1`, all ones) that C-RADIO
    has not got and the released safetensors do not store; they are counted separately so the checkpoint figure
    matches the release (33,015,546,816 for the full architecture).

    Args:
        model: transformers' `NemotronH_Omni_Reasoning_V3` (the meta device works).
    Returns:
        {component: parameters}, plus "checkpoint" (what the safetensors hold), "vision.layer_scale_identity" and
        "module_total".
    """
    language = model.language_model
    counts: dict[str, int] = {
        "llm.embeddings": language.model.embeddings.weight.numel(),
        "llm.lm_head": language.lm_head.weight.numel(),
    }
    norms = language.model.norm_f.weight.numel()
    for layer, info in zip(language.model.layers, layers(model), strict=True):
        norms += layer.norm.weight.numel()
        key = f"llm.{info.kind}"
        counts[key] = counts.get(key, 0) + sum(p.numel() for p in layer.mixer.parameters())
    counts["llm.norms"] = norms
    layer_scale = sum(p.numel() for name, p in model.vision_model.named_parameters() if "layer_scale" in name)
    counts["vision.tower"] = sum(p.numel() for p in model.vision_model.parameters()) - layer_scale
    counts["vision.projector"] = sum(p.numel() for p in model.multi_modal_projector.parameters())
    if model.audio_tower is not None:
        counts["audio.tower"] = sum(p.numel() for p in model.audio_tower.parameters())
        counts["audio.projector"] = sum(p.numel() for p in model.embed_audio.parameters())
    counts["checkpoint"] = sum(value for value in counts.values())
    counts["vision.layer_scale_identity"] = layer_scale
    counts["module_total"] = sum(p.numel() for p in model.parameters())
    return counts


def architecture_summary(model, processor) -> dict:
    """Layer pattern, layer kinds, experts, parameter counts and token budgets of a model and its processor.

    Returns:
        dict: layer_pattern, layers {total, mamba, moe, attention}, attention_layers, hidden_size, experts {routed,
        top_k, shared, routed_scaling_factor}, parameters (`parameter_counts`), matches_release, budgets
        {context_tokens, image_tokens [min, max], video_tokens_per_tubelet, video_frames_per_tubelet,
        video_pruning_rate, audio_tokens_per_second}.
    """
    config, text = model.config, model.config.text_config
    image_processor, video_processor = processor.image_processor, processor.video_processor
    merge = round(1 / image_processor.downsample_ratio) ** 2
    counts = parameter_counts(model)
    registry = layers(model)
    kinds = [info.kind for info in registry]
    return {
        "layer_pattern": text.hybrid_override_pattern,
        "layers": {
            "total": len(registry),
            "mamba": kinds.count("mamba"),
            "moe": kinds.count("moe"),
            "attention": kinds.count("attention"),
        },
        "attention_layers": [info.index for info in registry if info.kind == "attention"],
        "hidden_size": text.hidden_size,
        "experts": {
            "routed": text.n_routed_experts,
            "top_k": text.num_experts_per_tok,
            "shared": text.n_shared_experts,
            "routed_scaling_factor": text.routed_scaling_factor,
        },
        "parameters": counts,
        "matches_release": counts["checkpoint"] == RELEASED_PARAMETER_COUNT,
        "budgets": {
            "context_tokens": int(text.max_position_embeddings),
            "image_tokens": [image_processor.min_num_patches // merge, image_processor.max_num_patches // merge],
            "video_tokens_per_tubelet": video_processor.video_target_num_patches // merge,
            "video_frames_per_tubelet": config.video_temporal_patch_size,
            "video_pruning_rate": config.video_pruning_rate,
            "audio_tokens_per_second": 16000 / 160 / config.audio_config.subsampling_factor
            if config.audio_config is not None
            else None,
        },
    }
