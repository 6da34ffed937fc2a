"""Token reducers: before the encoders (Downsample), between the projector and the LLM, inside the LLM (FastV,
PyramidDrop, SparseVLM), and the interface they share."""

from .base import Reducer, Reduction, ReductionItem
from .divprune import DivPrune
from .downsample import Downsample
from .evs import EVS
from .fastv import FastV
from .in_llm import LLMStage
from .merging import AudioMerge, ToMe
from .names import CONTROL_NAMES, REDUCER_NAMES, at_rate
from .pixeldiff import PixelDiff
from .pyramiddrop import PyramidDrop
from .random_drop import RandomDrop
from .sparsevlm import SparseVLM
from .temporal import UniformTemporal
from .visionzip import VisionZip

__all__ = [
    "CONTROL_NAMES",
    "EVS",
    "FastV",
    "AudioMerge",
    "DivPrune",
    "Downsample",
    "LLMStage",
    "PixelDiff",
    "PyramidDrop",
    "REDUCER_NAMES",
    "RandomDrop",
    "Reducer",
    "Reduction",
    "ReductionItem",
    "SparseVLM",
    "ToMe",
    "UniformTemporal",
    "VisionZip",
    "at_rate",
]
