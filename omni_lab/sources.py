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
from .release_layout import released_config_to_native, released_processor_layout, released_processor_settings

HUB_IDS = (
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16",
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-FP8",
    "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-NVFP4",
)
TOY_DIR = Path(__file__).parent / "toy" / "assets" / "omni-toy"
# The twin's third stage (ShapesWorld's hard tier), shipped beside the default: it forgot part of the basic tier, so
# "toy" stays the stage-2 twin and "toy-hard" serves the hard-tier studies (its card says what it learned and lost).
TOY_HARD_DIR = Path(__file__).parent / "toy" / "assets" / "omni-toy-hard"
TWINS = {"toy": TOY_DIR, "toy-hard": TOY_HARD_DIR}
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
            f"model source {spec!r} is not a name: pass 'toy', 'toy-hard', 'random:toy', 'random:small', 'random:full', "
            "a local checkpoint directory or a hub id"
        )
    spec = str(spec).strip()
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        if name not in PRESETS:
            raise OmniLabModelError(f"unknown preset {name!r} in {spec!r}: choose one of {', '.join(sorted(PRESETS))}")
        return Source(spec, "preset", preset=name)
    if spec in TWINS:
        if not (TWINS[spec] / "config.json").is_file():
            raise OmniLabModelError(
                f"the trained toy twin {spec!r} is not in this installation (looked in {TWINS[spec]}). Reinstall "
                "omni-lab (the package ships it), or train one with `omni-lab train-toy --out DIR` and load DIR; "
                "'random:toy' has the same architecture with random weights (its outputs mean nothing)."
            )
        return Source(spec, "checkpoint", path=TWINS[spec])
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


def check_device(device) -> str:
    """`device` as a string torch and accelerate accept ("cpu", "cuda", "cuda:N", "meta", "auto"), or a clear error:
    OmniLabInputError for a name torch does not know, OmniLabModelError for a GPU this machine does not have."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise OmniLabInputError(f"device={device!r}: pass 'cpu', 'cuda', 'cuda:N', 'meta' or 'auto'")
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise OmniLabInputError(
            f"device={device!r} is not a device name; pass 'cpu', 'cuda', 'cuda:N', 'meta' or 'auto'"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OmniLabModelError(f"device={device!r}: this machine has no CUDA GPU torch can use; pass device='cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise OmniLabModelError(f"device={device!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type not in ("cpu", "meta"):
        raise OmniLabInputError(f"device={device!r}: omni-lab runs on 'cpu', 'cuda', 'cuda:N', 'meta' or 'auto'")
    return device


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

    if not released_processor_layout(path):
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
    target = torch.device(device)
    if target.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = NemotronH_Omni_Reasoning_V3(config)
        return model.to(device=device, dtype=dtype).eval()
    # An accelerator: initialise there, in the target dtype, so "random:full" (33B parameters) never needs 132 GB
    # of float32 on the host. Its random stream is the device's, so the weights differ from the CPU build's.
    with torch.random.fork_rng(devices=[target], device_type=target.type), torch.device(target):
        torch.manual_seed(seed)
        model = NemotronH_Omni_Reasoning_V3._from_config(config, dtype=dtype)
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
