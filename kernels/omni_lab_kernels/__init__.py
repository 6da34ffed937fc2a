"""Kernels: segment-pooled attention mass, SSD (Mamba-2) pooled mass and EVS scoring (README, "Quick start").

Three rungs per op, one signature:

- ``spec.py``: float64, one position at a time: the definitions (tests only);
- ``ref.py``: chunked plain torch: the CPU path;
- ``triton_attention.py``, ``triton_ssd.py``: Triton: the CUDA path.

The functions exported here check their arguments and pick the backend (``dispatch.py``):
Triton for CUDA tensors when it imports, the reference elsewhere; ``OMNI_LAB_KERNELS=ref|triton|auto`` overrides.
Tensors and integer segment ids in, tensors out; nothing here imports omni_lab, and importing this package does
not import triton.
"""

from .dispatch import (
    choose_backend,
    evs_keep,
    evs_retention_mask,
    evs_scores,
    pooled_attention_mass,
    ssd_pooled_mass,
)

__all__ = ["choose_backend", "evs_keep", "evs_retention_mask", "evs_scores", "pooled_attention_mass", "ssd_pooled_mass"]
