"""Model sources: random presets, the shipped toy twin, local checkpoint directories and hub ids.

Every source ends as transformers' own `NemotronH_Omni_Reasoning_V3` plus its own processor: presets are built from
`presets.py`, checkpoints go through `from_pretrained` (safetensors only, never `trust_remote_code`). A checkpoint in
the released layout (config.json with `llm_config` / `sound_config` / RADIO `args`, the remote-code model type) has its
config translated to transformers' native fields here; its weights are renamed by transformers' own conversion
mapping while loading.
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
# (width, depth, heads) of the timm ViT names RADIO checkpoints use in `vision_config.args.model`.
_VIT_SIZES = {"vit_huge": (1280, 32, 16), "vit_large": (1024, 24, 16), "vit_base": (768, 12, 12)}
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

    transformers' config class already maps the legacy top-level names (`llm_config`, `sound_config`,
    `img_context_token_id`, ...); what it cannot read is the RADIO tower described by timm `args`
    (model_spec §3.1): width/depth/heads come from the ViT name, one CLS token per unique teacher, registers padding
    the prefix to `register_multiple`, the CPE table from `cpe_max_size`.
    """
    native = {key: value for key, value in raw.items() if key not in ("auto_map", "architectures", "model_type")}
    vision = dict(raw.get("vision_config") or {})
    args = vision.pop("args", None)
    if args is not None:
        model_name = str(args.get("model", "vit_huge_patch16_224"))
        family = next((name for name in _VIT_SIZES if model_name.startswith(name)), None)
        if family is None:
            raise OmniLabModelError(f"unknown RADIO backbone {model_name!r} in vision_config.args.model")
        width, depth, heads = _VIT_SIZES[family]
        teachers = args.get("teachers") or []
        names = {
            teacher.get("name", str(teacher)) if isinstance(teacher, dict) else str(teacher) for teacher in teachers
        }
        num_cls = max(1, len(names)) if args.get("cls_token_per_teacher", True) else 1
        multiple = int(args.get("register_multiple") or 0)
        registers = (multiple - num_cls % multiple) % multiple if multiple else 0
        vision = {
            "hidden_size": width,
            "num_hidden_layers": depth,
            "num_attention_heads": heads,
            "patch_size": int(vision.get("patch_size", raw.get("patch_size", 16))),
            "max_img_size": int(args.get("cpe_max_size", vision.get("max_resolution", 2048))),
            "num_cls_tokens": num_cls,
            "num_registers": registers,
            "video_temporal_patch_size": int(
                vision.get("video_temporal_patch_size", raw.get("video_temporal_patch_size", 2))
            ),
            "norm_mean": raw.get("norm_mean", vision.get("norm_mean")),
            "norm_std": raw.get("norm_std", vision.get("norm_std")),
        }
        vision = {key: value for key, value in vision.items() if value is not None}
    native["vision_config"] = vision
    for key in ("llm_config", "text_config"):
        if isinstance(native.get(key), dict):
            native[key] = {k: v for k, v in native[key].items() if k not in ("auto_map", "architectures")}
    sound = native.pop("sound_config", None) or native.pop("audio_config", None)
    if sound:
        native["audio_config"] = {k: v for k, v in sound.items() if k not in ("model_type", "architectures")}
    return native


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


def load_processor(path: Path, config):
    """The model's own processor for a checkpoint directory (no remote code)."""
    from transformers import AutoTokenizer, ParakeetFeatureExtractor
    from transformers.models.nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3ImageProcessor,
        NemotronH_Omni_Reasoning_V3Processor,
        NemotronH_Omni_Reasoning_V3VideoProcessor,
    )

    if (path / "processor_config.json").is_file() or _native_preprocessor(path):
        return NemotronH_Omni_Reasoning_V3Processor.from_pretrained(path)
    # Released layout: the processor config names remote-code classes, so build transformers' own from its values.
    raw = json.loads((path / "preprocessor_config.json").read_text())
    image_keys = (
        "patch_size",
        "downsample_ratio",
        "min_num_patches",
        "max_num_patches",
        "max_model_len",
        "norm_mean",
        "norm_std",
        "image_mean",
        "image_std",
    )
    vision = config.vision_config
    image_processor = NemotronH_Omni_Reasoning_V3ImageProcessor(**{k: raw[k] for k in image_keys if k in raw})
    video_processor = NemotronH_Omni_Reasoning_V3VideoProcessor(
        patch_size=raw.get("patch_size", 16),
        downsample_ratio=raw.get("downsample_ratio", 0.5),
        video_target_num_patches=getattr(vision, "video_target_num_patches", 1024),
        video_maintain_aspect_ratio=getattr(vision, "video_maintain_aspect_ratio", True),
        temporal_patch_size=config.video_temporal_patch_size,
        norm_mean=raw.get("norm_mean", raw.get("image_mean")),
        norm_std=raw.get("norm_std", raw.get("image_std")),
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    sampling_rate = 16000
    features = ParakeetFeatureExtractor(feature_size=config.audio_config.num_mel_bins, sampling_rate=sampling_rate)
    return NemotronH_Omni_Reasoning_V3Processor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        feature_extractor=features,
        chat_template=tokenizer.chat_template,
    )


def _native_preprocessor(path: Path) -> bool:
    file = path / "preprocessor_config.json"
    return file.is_file() and "Nano_Omni" not in json.loads(file.read_text()).get("image_processor_type", "")


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
