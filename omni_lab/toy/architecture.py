"""The toy twin's architecture: transformers' `NemotronH_Omni_Reasoning_V3` at a few million parameters.

Every mechanism of the release is kept (docs/model_layout.md §2-6): a 10-layer hybrid LLM
`MEM*EMEM*E` with Mamba-2, MoE (16 routed experts, top-2, a shared expert, sigmoid router with correction bias,
routed scaling 2.5, ReLU^2) and NoPE GQA attention; a RADIO ViT with CPE, CLS + register tokens, the separate
2-frame tubelet video embedder, 2x2 pixel shuffle and the RMSNorm-ReLU^2 projector; a Parakeet FastConformer with 8x
depthwise-striding subsampling of 128-bin mel features and its own projector. The processors keep ShapesWorld's
128 x 128 pictures and frames as they are (64 patches -> a 4 x 4 grid of 16 merged tokens per image or tubelet).
"""

from __future__ import annotations

from ..presets import (
    Preset,
    audio_config,
    build_config,
    image_processor_config,
    text_config,
    video_processor_config,
    vision_config,
)
from .vocabulary import VOCAB_SIZE

TWIN_PATTERN = "MEM*EMEM*E"
PATCHES_PER_FRAME = 64  # 128 x 128 px in 16-px patches

TWIN = Preset(
    name="twin",
    text=text_config(
        hidden=128,
        pattern=TWIN_PATTERN,
        heads=4,
        kv_heads=2,
        head_dim=32,
        mamba_heads=8,
        mamba_head_dim=32,
        state=32,
        groups=2,
        experts=16,
        top_k=2,
        expert_size=128,
        shared_size=256,
        vocab=VOCAB_SIZE,
        context=4096,
        chunk=64,
    ),
    vision=vision_config(hidden=96, layers=3, heads=4, max_img_size=128, cls_tokens=2, registers=2),
    audio=audio_config(hidden=64, layers=2, heads=2, intermediate=128, sub_channels=16, projection_hidden=256),
    projector_hidden_size=384,
    image_processor=image_processor_config(PATCHES_PER_FRAME, PATCHES_PER_FRAME, 4096),
    video_processor=video_processor_config(PATCHES_PER_FRAME),
    notes="the toy twin trained on ShapesWorld (omni_lab.toy)",
)


def build_twin_config(preset: Preset = TWIN):
    """transformers' `NemotronH_Omni_Reasoning_V3_Config` for the twin."""
    return build_config(preset)


def build_twin_processor(preset: Preset = TWIN):
    """The model's own processor with the twin's budgets and the ShapesWorld tokenizer (`vocabulary.py`)."""
    from transformers import ParakeetFeatureExtractor
    from transformers.models.nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3ImageProcessor,
        NemotronH_Omni_Reasoning_V3Processor,
        NemotronH_Omni_Reasoning_V3VideoProcessor,
    )

    from .vocabulary import build_vocabulary

    tokenizer = build_vocabulary(preset.text["vocab_size"])
    return NemotronH_Omni_Reasoning_V3Processor(
        image_processor=NemotronH_Omni_Reasoning_V3ImageProcessor(**preset.image_processor),
        video_processor=NemotronH_Omni_Reasoning_V3VideoProcessor(**preset.video_processor),
        tokenizer=tokenizer,
        feature_extractor=ParakeetFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160),
        chat_template=tokenizer.chat_template,
    )


def initialise_for_training(model) -> None:
    """Re-initialise the encoders' entry layers and both projectors for training from scratch, in place.

    transformers initialises every layer with N(0, 0.02), a choice for fine-tuning released weights. From scratch,
    that scale erases the audio signal: the Parakeet subsampling stack (five convolutions, no residual) shrinks the
    mel features to ~1e-7, below its LayerNorm's epsilon, and the projectors' ReLU^2 on 0.02-scale inputs passes almost
    nothing. Here the subsampling convolutions get He-normal weights with zero biases, the projectors' first linear
    layer LeCun-normal weights (unit-scale input to ReLU^2) and their last one a small N(0, 0.005), so media tokens start
    with content-dependent embeddings of the text embeddings' scale. Every other parameter keeps transformers' init.
    """
    import torch

    subsampling = model.audio_tower.subsampling if model.audio_tower is not None else None
    with torch.no_grad():
        for module in subsampling.modules() if subsampling is not None else ():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        for projector in (model.multi_modal_projector, model.embed_audio):
            if projector is None:
                continue
            torch.nn.init.normal_(projector.linear_1.weight, std=projector.linear_1.in_features**-0.5)
            torch.nn.init.normal_(projector.linear_2.weight, std=0.005)
            for layer in (projector.linear_1, projector.linear_2):
                if layer.bias is not None:
                    torch.nn.init.zeros_(layer.bias)


def build_twin(seed: int = 0, preset: Preset = TWIN, for_training: bool = False):
    """A freshly initialised twin as a `Lab` (float32, CPU) with the given initialisation seed.

    Args:
        seed: initialisation seed.
        preset: the architecture.
        for_training: apply `initialise_for_training` (the initialisation `train-toy` starts from).
    """
    import torch
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3

    from ..lab import Lab
    from ..sources import Source

    config = build_twin_config(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NemotronH_Omni_Reasoning_V3(config)
        if for_training:
            initialise_for_training(model)
    return Lab(model.float().eval(), build_twin_processor(preset), Source("twin", "preset"), "cpu", torch.float32)
