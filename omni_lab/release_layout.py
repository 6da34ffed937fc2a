"""The released checkpoint layout, translated to transformers' native config and processor fields, at any size.

NVIDIA's release ships a remote-code layout: config.json with `llm_config` / `vision_config` (a RADIO tower described
by timm `args`, with `args.model_kwargs` passed to timm) / `sound_config` and the remote model type; processor files
naming remote classes; budgets spread over preprocessor_config.json, processor_config.json and config.json
(docs/model_layout.md §8). omni-lab never runs remote code: `released_config_to_native` translates every field the
format carries (refusing, by name, what transformers' RADIO cannot build) and `released_processor_settings` reads each
processor budget from where the release keeps it. `sources.load_config` / `load_processor` call them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import OmniLabModelError


def released_config_to_native(raw: dict) -> dict:
    """Translate a released-layout config.json (remote-code model type) into transformers' native fields.

    Every field the release format carries (docs/model_layout.md §8) is translated, carried through as an
    attribute transformers ignores, or refused by name when transformers' modules cannot build what it describes:

    - top level: `llm_config` -> `text_config`, `sound_config` -> `audio_config`, `img_context_token_id` /
      `video_context_token_id` / `sound_context_token_id` -> `image_token_id` / `video_token_id` / `audio_token_id`,
      `vit_hidden_size` -> `vision_hidden_size` (checked against the tower), `torch_dtype` -> `dtype`,
      `norm_mean` / `norm_std` -> the tower's input conditioner, `video_temporal_patch_size` (checked against the
      vision copy), `ps_version` (only "v2" exists in transformers); the rest (`force_image_size`,
      `downsample_ratio`, `projector_hidden_size`, `video_pruning_rate`, `eos_token_id`, ...) keeps its name.
    - `vision_config`: the RADIO tower that timm builds from `args.model` with `args.model_kwargs` passed on
      (`_radio_tower`); its other fields (video budget, RADIO metadata) are carried through as attributes. The
      processor budgets are read by `released_processor_settings`.
    - `sound_config`: Parakeet fields keep their names; the release's Parakeet has no attention bias and no input
      scaling, which transformers' defaults would otherwise switch on.

    Args:
        raw: the parsed config.json of a released-layout checkpoint.

    Returns:
        keyword arguments for `NemotronH_Omni_Reasoning_V3_Config`.

    Raises:
        OmniLabModelError: a field describes something transformers cannot build (named in the message).
    """
    native = _renamed(raw, (*_RELEASE_DROPPED, "model_type"))
    for legacy, name in _RELEASE_TOP_LEVEL_NAMES.items():
        if legacy in native:
            native[name] = native.pop(legacy)
    if str(native.get("ps_version", "v2")) != "v2":
        raise OmniLabModelError(
            f"config.json has ps_version={native['ps_version']!r}; transformers' Nemotron Omni implements only the "
            "'v2' pixel shuffle the release uses"
        )
    vision = _radio_tower(dict(raw.get("vision_config") or {}), raw)
    declared_width, width = native.pop("vision_hidden_size", None), vision.get("hidden_size")
    if declared_width is not None and width is not None and int(declared_width) != width:
        raise OmniLabModelError(
            f"config.json has vit_hidden_size={declared_width} but its vision_config builds a RADIO tower {width} "
            "wide (args.model with args.model_kwargs); the vision projector is sized from vit_hidden_size, so the "
            "two must agree"
        )
    if width is not None or declared_width is not None:
        native["vision_hidden_size"] = int(width if width is not None else declared_width)
    native["video_temporal_patch_size"] = vision["video_temporal_patch_size"]
    native["vision_config"] = vision
    if isinstance(native.get("text_config"), dict):
        native["text_config"] = _renamed(native["text_config"], _RELEASE_DROPPED)
    if isinstance(native.get("audio_config"), dict):
        sound = _renamed(native["audio_config"], (*_RELEASE_DROPPED, "model_type"))
        native["audio_config"] = {"attention_bias": False, "scale_input": False, **sound}
    return native


# Keys of the release's configs that only name remote code; `model_type` of the top level is the remote class.
_RELEASE_DROPPED = ("auto_map", "architectures", "transformers_version")
_RELEASE_TOP_LEVEL_NAMES = {
    "llm_config": "text_config",
    "sound_config": "audio_config",
    "img_context_token_id": "image_token_id",
    "video_context_token_id": "video_token_id",
    "sound_context_token_id": "audio_token_id",
    "vit_hidden_size": "vision_hidden_size",
}
# timm ViT names RADIO checkpoints use in `vision_config.args.model` -> what timm builds for each (patch_size,
# embed_dim, depth, num_heads, mlp_ratio): timm's vision_transformer.py and RADIO's extra_timm_models.py.
_TIMM_VITS = {
    "vit_tiny_patch14_224": (14, 192, 12, 3, 4.0),
    "vit_tiny_patch16_224": (16, 192, 12, 3, 4.0),
    "vit_small_patch14_224": (14, 384, 12, 6, 4.0),
    "vit_small_patch16_224": (16, 384, 12, 6, 4.0),
    "vit_base_patch14_224": (14, 768, 12, 12, 4.0),
    "vit_base_patch16_224": (16, 768, 12, 12, 4.0),
    "vit_large_patch14_224": (14, 1024, 24, 16, 4.0),
    "vit_large_patch16_224": (16, 1024, 24, 16, 4.0),
    "vit_huge_patch14_224": (14, 1280, 32, 16, 4.0),
    "vit_huge_patch16_224": (16, 1280, 32, 16, 4.0),
    "vit_giant_patch16_224": (16, 1536, 40, 24, 4.0),
    "vit_so400m_patch16_224": (16, 1152, 27, 16, 4304 / 1152),
}
# timm keyword arguments (RADIO passes `args.model_kwargs` to timm's create_model) -> RadioConfig fields.
_TIMM_SIZE_KWARGS = {
    "patch_size": "patch_size",
    "embed_dim": "hidden_size",
    "depth": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "img_size": "image_size",
    "in_chans": "num_channels",
}
# timm keyword arguments that change only training, or parts RADIO replaces (CPE swaps the patch embedding, position
# table and class token for its own; the head and the final norm are dropped unless `args.model_norm`).
_TIMM_INERT_KWARGS = frozenset(
    {
        "weight_init",
        "fix_init",
        "drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "dynamic_img_size",
        "dynamic_img_pad",
        "num_classes",
        "global_pool",
        "pos_embed",
        "no_embed_class",
        "reg_tokens",
        "fc_norm",
        "final_norm",
    }
)
# timm keyword arguments whose other values build blocks transformers' RADIO does not have: (value it has, what).
_TIMM_FIXED_KWARGS = {
    "init_values": (None, "LayerScale with learned values"),
    "qk_norm": (False, "query/key normalisation"),
    "pre_norm": (False, "a pre-norm before the blocks"),
    "proj_bias": (True, "attention/MLP projections without bias"),
    "class_token": (True, "no class token"),
    "act_layer": ("gelu", "another activation"),
}


def _renamed(config: dict, dropped) -> dict:
    """A copy without the remote-code keys, `torch_dtype` spelled `dtype` (transformers 5 deprecates the old name)."""
    out = {key: value for key, value in config.items() if key not in dropped}
    if "torch_dtype" in out:
        dtype = out.pop("torch_dtype")
        out.setdefault("dtype", dtype)
    return out


def _radio_tower(vision: dict, raw: dict) -> dict:
    """RadioConfig fields for the RADIO tower a released `vision_config` describes (docs/model_layout.md §8).

    RADIO builds the tower with timm's `create_model(args.model, **args.model_kwargs)`, so the size is the named
    ViT's unless `model_kwargs` overrides it; then CPE (`args.cpe_max_size`) replaces the patch embedding with one
    CLS token per unique teacher (`cls_token_per_teacher`) padded with registers to `register_multiple` (RADIO's
    ClsToken: `register_multiple - num_cls % register_multiple`, or `cpe_num_registers` when given) and a position
    table covering `cpe_max_size` pixels. The summary indices are the teachers with `use_summary`.

    Args:
        vision: the release's `vision_config` (with `args`), or already native fields (no `args`: kept as given).
        raw: the whole config.json (top-level `patch_size`, `norm_mean`, `video_temporal_patch_size`).

    Returns:
        RadioConfig keyword arguments, plus the release's non-architecture vision fields carried through.
    """
    args = vision.pop("args", None)
    vision = _renamed(vision, (*_RELEASE_DROPPED, "model_type"))
    temporal = _agreeing(vision, raw, "video_temporal_patch_size", default=2)
    if args is None:
        vision.setdefault("video_temporal_patch_size", temporal)
        return vision
    model_name = str(args.get("model", "vit_huge_patch16_224")).split(".")[0]
    if model_name not in _TIMM_VITS:
        raise OmniLabModelError(
            f"vision_config.args.model is {model_name!r}; transformers' RADIO builds plain timm ViTs: "
            f"{', '.join(sorted(_TIMM_VITS))} (sized further by args.model_kwargs)"
        )
    patch, width, depth, heads, mlp_ratio = _TIMM_VITS[model_name]
    tower = {"patch_size": patch, "hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads}
    tower.update(mlp_ratio=mlp_ratio, qkv_bias=True, image_size=int(model_name.rsplit("_", 1)[1]))
    if args.get("in_chans") is not None:
        tower["num_channels"] = int(args["in_chans"])
    for key, value in dict(args.get("model_kwargs") or {}).items():
        if key in _TIMM_SIZE_KWARGS:
            tower[_TIMM_SIZE_KWARGS[key]] = value
        elif key in _TIMM_FIXED_KWARGS:
            supported, what = _TIMM_FIXED_KWARGS[key]
            if not (value is None or value == supported or (not supported and not value)):  # None: timm's default
                raise OmniLabModelError(
                    f"vision_config.args.model_kwargs.{key}={value!r} builds {what}, which transformers' RADIO does "
                    f"not have (it needs {key}={supported!r})"
                )
        elif key not in _TIMM_INERT_KWARGS:
            raise OmniLabModelError(
                f"vision_config.args.model_kwargs.{key}={value!r} is a timm argument omni-lab cannot translate for "
                "transformers' RADIO; remove it if it only affected training"
            )
    for key, value, why in (
        ("model_norm", bool(args.get("model_norm", False)), "a final LayerNorm after the blocks"),
        ("vitdet_window_size", vision.get("vitdet_window_size"), "windowed (ViTDet) attention"),
        ("separate_video_embedder", not vision.get("separate_video_embedder", True), "one embedder for video"),
    ):
        if value:
            raise OmniLabModelError(f"vision_config {key} asks for {why}, which transformers' RADIO does not build")
    if args.get("cpe_max_size") is None:
        raise OmniLabModelError("vision_config.args.cpe_max_size is missing: transformers' RADIO is the CPE variant")
    declared_patch = vision.get("patch_size", raw.get("patch_size"))
    if declared_patch is not None and int(declared_patch) != tower["patch_size"]:
        raise OmniLabModelError(
            f"config.json declares patch_size={declared_patch} but vision_config.args builds "
            f"{tower['patch_size']}-pixel patches"
        )
    teachers = list(args.get("teachers") or [])
    names = {teacher.get("name", str(teacher)) if isinstance(teacher, dict) else str(teacher) for teacher in teachers}
    num_cls = len(names) if args.get("cls_token_per_teacher", True) and names else 1
    multiple = int(args.get("register_multiple") or 0)
    registers = int(args.get("cpe_num_registers") or 0) or (multiple - num_cls % multiple if multiple else 0)
    summary = [i for i, t in enumerate(teachers) if not isinstance(t, dict) or t.get("use_summary", True)]
    cpe = int(round(int(args["cpe_max_size"]) / tower["patch_size"]) * tower["patch_size"])
    carried = {key: value for key, value in vision.items() if key not in ("patch_size", "video_temporal_patch_size")}
    return {
        **carried,
        **tower,
        "max_img_size": cpe,
        "num_cls_tokens": num_cls,
        "num_registers": registers,
        # RADIO indexes its CLS tokens with these; one past the CLS tokens would read a register, so keep those only.
        "summary_idxs": [i for i in summary if i < num_cls] if teachers else [0],
        "video_temporal_patch_size": temporal,
        "layer_norm_eps": 1e-6,  # timm's ViT LayerNorm
        "hidden_act": "gelu",  # timm's ViT MLP: exact (erf) GELU
        "norm_mean": raw.get("norm_mean", vision.get("norm_mean", _CLIP_MEAN)),
        "norm_std": raw.get("norm_std", vision.get("norm_std", _CLIP_STD)),
    }


_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _agreeing(vision: dict, raw: dict, key: str, default):
    """A value the release stores twice (vision_config and top level): the vision copy, refused when they differ."""
    inner, outer = vision.get(key), raw.get(key)
    if inner is not None and outer is not None and inner != outer:
        raise OmniLabModelError(
            f"config.json has {key}={outer} at the top level but {inner} in vision_config; they must agree"
        )
    return inner if inner is not None else outer if outer is not None else default


def released_processor_settings(path: Path) -> dict:
    """The processor budgets of a released-layout checkpoint, from wherever the release keeps each one.

    The remote-code processor reads preprocessor_config.json (image budget, normalisation; video budget when
    present) and processor_config.json (audio rates, frames per tubelet); what those files leave out comes from
    config.json, where vLLM reads it: `vision_config.video_target_num_patches` / `video_maintain_aspect_ratio`,
    `vision_config.args.min_num_patches` / `max_num_patches`, `sound_config.sampling_rate` / `num_mel_bins` /
    `subsampling_factor`, the top-level `patch_size` / `downsample_ratio` / `norm_mean` / `norm_std`.

    Args:
        path: the checkpoint directory.

    Returns:
        {"image": image processor kwargs, "video": video processor kwargs, "processor": processor kwargs,
        "features": Parakeet feature extractor kwargs}.
    """
    raw = json.loads((path / "config.json").read_text())
    pre = _read_json(path / "preprocessor_config.json")
    proc = _read_json(path / "processor_config.json")
    pre = {**proc.get("image_processor", {}), **pre}  # older exports nest the image processor's values
    vision = dict(raw.get("vision_config") or {})
    args = dict(vision.get("args") or {})
    sound = raw.get("sound_config") or raw.get("audio_config") or {}

    def first(key, *sources, default=None):
        return next((source[key] for source in sources if source.get(key) is not None), default)

    shared = {
        "patch_size": int(first("patch_size", pre, vision, raw, default=16)),
        "downsample_ratio": float(first("downsample_ratio", pre, raw, default=0.5)),
    }
    mean = first("norm_mean", pre, raw, vision, default=first("image_mean", pre, default=_CLIP_MEAN))
    std = first("norm_std", pre, raw, vision, default=first("image_std", pre, default=_CLIP_STD))
    image = {
        **shared,
        "min_num_patches": int(first("min_num_patches", pre, args, vision, default=1024)),
        "max_num_patches": int(first("max_num_patches", pre, args, vision, default=13312)),
        "max_model_len": int(first("max_model_len", pre, default=16384)),
        "image_mean": list(mean),
        "image_std": list(std),
    }
    temporal = int(_agreeing(vision, raw, "video_temporal_patch_size", default=2))
    video = {
        **shared,
        "video_target_num_patches": int(first("video_target_num_patches", pre, vision, raw, default=1024)),
        "video_maintain_aspect_ratio": bool(first("video_maintain_aspect_ratio", pre, vision, raw, default=True)),
        "temporal_patch_size": temporal,
        "norm_mean": list(mean),
        "norm_std": list(std),
    }
    sampling_rate = int(first("audio_sampling_rate", proc, default=first("sampling_rate", sound, default=16000)))
    hop = int(first("audio_hop_length", proc, default=160))
    processor = {
        "audio_sampling_rate": sampling_rate,
        "audio_subsampling_factor": int(
            first("audio_subsampling_factor", proc, default=first("subsampling_factor", sound, default=8))
        ),
        "audio_hop_length": hop,
        "video_temporal_patch_dim": int(first("video_temporal_patch_dim", proc, default=temporal)),
    }
    features = {"feature_size": int(first("num_mel_bins", sound, default=128)), "sampling_rate": sampling_rate}
    features["hop_length"] = hop
    return {"image": image, "video": video, "processor": processor, "features": features}


def _read_json(file: Path) -> dict:
    return json.loads(file.read_text()) if file.is_file() else {}


def released_processor_layout(path: Path) -> bool:
    """Whether the processor files of a directory name the release's remote-code classes."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = path / name
        if file.is_file() and "Nano_Omni" in file.read_text():
            return True
    return not (path / "processor_config.json").is_file() and not (path / "preprocessor_config.json").is_file()
