"""Model sources: random presets, the shipped toy twin, local checkpoint directories and hub ids.

Every source ends as transformers' own `NemotronH_Omni_Reasoning_V3` plus its own processor: presets are built from
`presets.py`, checkpoints go through `from_pretrained` (safetensors only, never `trust_remote_code`). A checkpoint in
the released layout (config.json with `llm_config` / `sound_config` / a RADIO tower described by timm `args`, the
remote-code model type; processor files naming remote classes) has its config translated to transformers' native
fields here, at whatever size it declares (`released_config_to_native`), and its processor built from the budgets the
release stores (`released_processor_settings`); its weights are renamed by transformers' own conversion mapping while
loading (per-expert MoE tensors stacked, RADIO's fused qkv split).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import OmniLabInputError, OmniLabModelError
from .presets import PRESETS, build_config, build_processor

HUB_IDS = (
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16",
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-FP8",
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-NVFP4",
)
TOY_DIR = Path(__file__).parent / "toy" / "assets" / "omni-toy"
RELEASED_MODEL_TYPES = ("NemotronH_Nano_Omni_Reasoning_V3", "NemotronH_Omni_Reasoning_V3")
_HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]


@dataclass(frozen=True)
class Source:
    """A resolved model source: `kind` is "preset" (with `preset`) or "checkpoint" (with `path`)."""

    spec: str
    kind: str
    preset: str | None = None
    path: Path | None = None


def resolve(spec: str, *, allow_download: bool = False) -> Source:
    """Turn a user's source string into a `Source`, checking that what it names exists."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise OmniLabModelError(
            f"model source {spec!r} is not a name: pass 'toy', 'random:toy', 'random:small', 'random:full', "
            "a local checkpoint directory or a hub id"
        )
    spec = str(spec).strip()
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        if name not in PRESETS:
            raise OmniLabModelError(f"unknown preset {name!r} in {spec!r}: choose one of {', '.join(sorted(PRESETS))}")
        return Source(spec, "preset", preset=name)
    if spec == "toy":
        if not (TOY_DIR / "config.json").is_file():
            raise OmniLabModelError(
                f"the trained toy twin is not in this installation (looked in {TOY_DIR}). Reinstall omni-lab "
                "(the package ships it), or train one with `omni-lab train-toy --out DIR` and load DIR; "
                "'random:toy' has the same architecture with random weights (its outputs mean nothing)."
            )
        return Source(spec, "checkpoint", path=TOY_DIR)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OmniLabModelError(f"model source {spec!r} is a file; pass the checkpoint directory that holds it")
        check_checkpoint_dir(path)
        return Source(spec, "checkpoint", path=path.resolve())
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return Source(spec, "checkpoint", path=_hub_snapshot(spec, allow_download))
    raise OmniLabModelError(
        f"model source {spec!r} is neither a preset, an existing directory nor a hub id (owner/name). "
        f"Presets: {', '.join('random:' + p for p in sorted(PRESETS))}; released checkpoints: {', '.join(HUB_IDS)}"
    )


def _hub_snapshot(repo_id: str, allow_download: bool) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        folder = snapshot_download(
            repo_id, allow_patterns=_HUB_FILE_PATTERNS, local_files_only=not allow_download or constants.HF_HUB_OFFLINE
        )
    except Exception as error:  # huggingface_hub raises several types for "not cached" and "offline"
        how = (
            f"Download it first (about 63 GB for BF16): `hf download {repo_id} --local-dir DIR`, then "
            f"`ol.load('DIR')`; or call `ol.load('{repo_id}', allow_download=True)`."
        )
        raise OmniLabModelError(
            f"{repo_id} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and omni-lab does not "
            f"download weights unless asked. {how} ({type(error).__name__}: {error})"
        ) from None
    path = Path(folder)
    check_checkpoint_dir(path)
    return path


def check_checkpoint_dir(path: Path) -> None:
    """Raise `OmniLabModelError` naming every file a checkpoint directory lacks."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing += [shard for shard in shards if not (path / shard).is_file()]
    elif not (path / "model.safetensors").is_file():
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        if pickled:
            raise OmniLabModelError(
                f"{path} holds pickled weights ({', '.join(pickled)}); omni-lab loads safetensors only. Convert "
                "them with `safetensors` or use a release that ships *.safetensors."
            )
        missing.append("model.safetensors (or model.safetensors.index.json with its shards)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        missing.append("tokenizer.json")
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
    if missing:
        raise OmniLabModelError(
            f"checkpoint directory {path} is missing {', '.join(missing)}. Copy the complete release there, e.g. "
            f"`hf download {HUB_IDS[0]} --local-dir {path}` (or -FP8 / -NVFP4)."
        )


def read_quantization(path: Path) -> dict | None:
    """The `quantization_config` of a checkpoint directory, if any."""
    config = json.loads((path / "config.json").read_text())
    return config.get("quantization_config")


def check_quantization(path: Path, device: str) -> None:
    """Refuse, with the reason, a quantised checkpoint this device or this transformers cannot run."""
    quantization = read_quantization(path)
    if not quantization:
        return
    import torch
    import transformers
    from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING

    method = str(quantization.get("quant_method", "unknown"))
    algo = str(quantization.get("quant_algo", ""))
    label = "NVFP4" if "FP4" in algo.upper() or "nvfp4" in str(quantization).lower() else "FP8"
    needs = "a Blackwell GPU (sm100+)" if label == "NVFP4" else "a CUDA GPU with FP8 support (sm89+, Ada/Hopper)"
    device_type = str(device).split(":")[0]
    if device_type != "cuda" or not torch.cuda.is_available():
        raise OmniLabModelError(
            f"{path} is a {label} checkpoint (quant_method {method!r}); it needs {needs}, and this run asked for "
            f"device={device!r}. Load the BF16 checkpoint ({HUB_IDS[0]}) on CPU or on a GPU instead."
        )
    if method not in AUTO_QUANTIZER_MAPPING:
        raise OmniLabModelError(
            f"{path} is a {label} checkpoint with quant_method {method!r}, which transformers "
            f"{transformers.__version__} cannot load. Use the BF16 checkpoint ({HUB_IDS[0]})."
        )
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if (label == "NVFP4" and major < 10) or (label == "FP8" and (major, minor) < (8, 9)):
        raise OmniLabModelError(
            f"{path} is a {label} checkpoint; it needs {needs}, but {device} is sm{major}{minor}. Use the BF16 "
            f"checkpoint ({HUB_IDS[0]})."
        )


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


def load_config(path: Path):
    """transformers' config for a checkpoint directory, translating the released layout when needed."""
    from transformers import NemotronH_Omni_Reasoning_V3_Config

    raw = json.loads((path / "config.json").read_text())
    model_type = raw.get("model_type")
    if model_type == NemotronH_Omni_Reasoning_V3_Config.model_type:
        return NemotronH_Omni_Reasoning_V3_Config.from_pretrained(path)
    if model_type in RELEASED_MODEL_TYPES:
        return NemotronH_Omni_Reasoning_V3_Config(**released_config_to_native(raw))
    raise OmniLabModelError(
        f"{path}/config.json has model_type {model_type!r}; omni-lab wraps Nemotron 3 Nano Omni "
        f"({NemotronH_Omni_Reasoning_V3_Config.model_type!r} or the released {RELEASED_MODEL_TYPES[0]!r})"
    )


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


def load_processor(path: Path, config):
    """The model's own processor for a checkpoint directory (no remote code).

    A native directory (what `save_pretrained` writes) loads as it is; the released layout's processor files name
    remote-code classes, so transformers' own classes are built from `released_processor_settings`.
    """
    from transformers import AutoTokenizer, ParakeetFeatureExtractor
    from transformers.models.nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3ImageProcessor,
        NemotronH_Omni_Reasoning_V3Processor,
        NemotronH_Omni_Reasoning_V3VideoProcessor,
    )

    if not _released_processor_layout(path):
        return NemotronH_Omni_Reasoning_V3Processor.from_pretrained(path)
    settings = released_processor_settings(path)
    # config= keeps AutoTokenizer from parsing the remote-code config.json again (and warning about its type).
    tokenizer = AutoTokenizer.from_pretrained(path, config=config, trust_remote_code=False)
    return NemotronH_Omni_Reasoning_V3Processor(
        image_processor=NemotronH_Omni_Reasoning_V3ImageProcessor(**settings["image"]),
        video_processor=NemotronH_Omni_Reasoning_V3VideoProcessor(**settings["video"]),
        tokenizer=tokenizer,
        feature_extractor=ParakeetFeatureExtractor(**settings["features"]),
        chat_template=tokenizer.chat_template,
        **settings["processor"],
    )


def _released_processor_layout(path: Path) -> bool:
    """Whether the processor files of a directory name the release's remote-code classes."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = path / name
        if file.is_file() and "Nano_Omni" in file.read_text():
            return True
    return not (path / "processor_config.json").is_file() and not (path / "preprocessor_config.json").is_file()


def build_model(source: Source, device: str, dtype=None, *, seed: int = 0, progress: bool = True):
    """(model, processor, dtype) for a resolved source: a random preset built in-process, or a checkpoint loaded."""
    torch_dtype = _dtype(dtype)
    if source.kind == "preset":
        preset = PRESETS[source.preset]
        dtype_used = torch_dtype or torch.float32
        return _build_random(build_config(preset), device, dtype_used, seed), build_processor(preset), dtype_used
    return _load_checkpoint(source, device, torch_dtype, progress)


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.replace("torch.", "") in _DTYPES:
        return _DTYPES[dtype.replace("torch.", "")]
    raise OmniLabInputError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)} or a torch.dtype")


def _build_random(config, device: str, dtype: torch.dtype, seed: int):
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    if str(device) == "meta":
        with torch.device("meta"):
            return NemotronH_Omni_Reasoning_V3(config).to(dtype).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NemotronH_Omni_Reasoning_V3(config)
    return model.to(device=device, dtype=dtype).eval()


def _load_checkpoint(source: Source, device: str, dtype, progress: bool):
    """transformers' `from_pretrained` on a checkpoint directory (safetensors only, no remote code)."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    path = source.path
    check_quantization(path, str(device))
    config = load_config(path)
    on_gpu = str(device).startswith("cuda") or str(device) == "auto"
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    started = time.perf_counter()
    if progress:
        _say(f"omni-lab: loading {source.spec} from {path} ({dtype}, device={device}) ...")
    kwargs = dict(config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if str(device) == "meta":
        with torch.device("meta"):
            model = NemotronH_Omni_Reasoning_V3(config).to(dtype)
    else:
        if str(device) != "cpu":
            kwargs["device_map"] = "auto" if str(device) == "auto" else str(device)
        try:
            model = NemotronH_Omni_Reasoning_V3.from_pretrained(path, **kwargs)
        except OSError as error:
            raise OmniLabModelError(f"could not load weights from {path}: {error}") from None
    processor = load_processor(path, config)
    if progress:
        _say(f"omni-lab: loaded in {time.perf_counter() - started:.1f} s")
    return model.eval(), processor, dtype


def _say(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
