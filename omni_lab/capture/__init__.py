"""Captures and interventions: routing, attention and Mamba mass over modalities, residual norms, activations, and
capture kinds of your own.

run = lab.run(p, capture=["routing", "attention_mass", "mamba_mass", "residual"],
              cache=["llm.layers.*.attn.out"], interventions=[ol.ablate_experts(13, [7])])
run.routing.load(by="modality"); run.attention_mass.by_modality(); run.cache["llm.layers.12.attn.out"]
run.captures["routing"]     # every capture's result by name; ol.capture.register adds a kind (kinds.py)
"""

from .budget import BUDGET_BYTES
from .interventions import (
    Intervention,
    PatchContext,
    ablate_experts,
    ablate_tokens,
    force_experts,
    patch,
    set_top_k,
)
from .kinds import KINDS, CaptureKind, register
from .lens import DirectLogitCapture, LogitLensCapture
from .mass_capture import AttentionMassCapture, MambaMassCapture
from .patching import PatchFrom, patch_from
from .residual_capture import ResidualCapture
from .results import CaptureResults, LLMDrop, ModalityMass, Routing, combine_in_layer_order, entropy_bits
from .routing_capture import RoutingCapture

# The built-in kinds under the names `run(capture=[...])` uses: `ol.capture.attention_mass(segments="tubelet")`.
routing = RoutingCapture
attention_mass = AttentionMassCapture
mamba_mass = MambaMassCapture
residual = ResidualCapture
logit_lens = LogitLensCapture
direct_logit = DirectLogitCapture

__all__ = [
    "BUDGET_BYTES",
    "KINDS",
    "AttentionMassCapture",
    "CaptureKind",
    "CaptureResults",
    "DirectLogitCapture",
    "Intervention",
    "LLMDrop",
    "LogitLensCapture",
    "MambaMassCapture",
    "ModalityMass",
    "PatchFrom",
    "PatchContext",
    "ResidualCapture",
    "Routing",
    "RoutingCapture",
    "ablate_experts",
    "ablate_tokens",
    "attention_mass",
    "combine_in_layer_order",
    "direct_logit",
    "entropy_bits",
    "force_experts",
    "logit_lens",
    "mamba_mass",
    "patch",
    "patch_from",
    "register",
    "residual",
    "routing",
    "set_top_k",
]
