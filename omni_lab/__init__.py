"""omni-lab: see inside Nemotron 3 Nano Omni.

    import omni_lab as ol
    lab = ol.load("random:small")
    run = lab.run(lab.prompt("What is in the picture?", images=["cat.png"]))

Importing the package is cheap: torch, transformers and everything else load on first use.
"""

from __future__ import annotations

import importlib

from .errors import OmniLabInputError, OmniLabModelError

__version__ = "0.1.0"

_LAZY = {
    "load": ("omni_lab.lab", "load"),
    "Lab": ("omni_lab.lab", "Lab"),
    "Run": ("omni_lab.run", "Run"),
    "StreamToken": ("omni_lab.run", "StreamToken"),
    "RunOptions": ("omni_lab.options", "RunOptions"),
    "Prefill": ("omni_lab.run", "Prefill"),
    "Target": ("omni_lab.targets", "Target"),
    "executors": ("omni_lab.executors", None),
    "partition": ("omni_lab.partition", "partition"),
    "GroupBy": ("omni_lab.partition", "GroupBy"),
    "Partition": ("omni_lab.partition", "Partition"),
    "Prepared": ("omni_lab.forward", "Prepared"),
    "EncodedMedia": ("omni_lab.forward", "EncodedMedia"),
    "Prompt": ("omni_lab.prompt", "Prompt"),
    "TokenMap": ("omni_lab.token_map", "TokenMap"),
    "VideoClip": ("omni_lab.media", "VideoClip"),
    "AudioClip": ("omni_lab.media", "AudioClip"),
    "load_image": ("omni_lab.media", "load_image"),
    "load_video": ("omni_lab.media", "load_video"),
    "load_audio": ("omni_lab.media", "load_audio"),
    "load_video_audio": ("omni_lab.media", "load_video_audio"),
    "reducers": ("omni_lab.reduction", None),
    "capture": ("omni_lab.capture", None),
    "studies": ("omni_lab.studies", None),
    "provenance": ("omni_lab.provenance", None),
    "attribution": ("omni_lab.attribution", None),
    "cluster": ("omni_lab.cluster", None),
    "ablate_tokens": ("omni_lab.capture.interventions", "ablate_tokens"),
    "ablate_experts": ("omni_lab.capture.interventions", "ablate_experts"),
    "force_experts": ("omni_lab.capture.interventions", "force_experts"),
    "patch": ("omni_lab.capture.interventions", "patch"),
    "set_top_k": ("omni_lab.capture.interventions", "set_top_k"),
    "patch_from": ("omni_lab.capture.patching", "patch_from"),
}

__all__ = ["OmniLabInputError", "OmniLabModelError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'omni_lab' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
