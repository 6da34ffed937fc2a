"""Captures and interventions: routing, attention and Mamba mass over modalities, residual norms, activations.

run = lab.run(p, capture=["routing", "attention_mass", "mamba_mass", "residual"],
              cache=["llm.layers.*.attn.out"], interventions=[ol.ablate_experts(13, [7])])
run.routing.load(by="modality"); run.attention_mass.by_modality(); run.cache["llm.layers.12.attn.out"]
"""

from .budget import BUDGET_BYTES
from .interventions import Intervention, PatchContext, ablate_experts, ablate_tokens, force_experts, patch
from .results import CaptureResults, LLMDrop, ModalityMass, Routing, combine_in_layer_order, entropy_bits
from .specs import attention_mass, mamba_mass, residual, routing

__all__ = [
    "BUDGET_BYTES",
    "CaptureResults",
    "Intervention",
    "LLMDrop",
    "ModalityMass",
    "PatchContext",
    "Routing",
    "ablate_experts",
    "ablate_tokens",
    "attention_mass",
    "combine_in_layer_order",
    "entropy_bits",
    "force_experts",
    "mamba_mass",
    "patch",
    "residual",
    "routing",
]
