"""Token reducers acting between the projector and the LLM, and the interface they share."""

from .base import Reducer, Reduction, ReductionItem
from .divprune import DivPrune
from .evs import EVS
from .fastv import FastV
from .merging import AudioMerge, ToMe
from .names import REDUCER_NAMES, at_rate
from .pixeldiff import PixelDiff
from .random_drop import RandomDrop
from .temporal import UniformTemporal

__all__ = [
    "EVS",
    "FastV",
    "AudioMerge",
    "DivPrune",
    "PixelDiff",
    "REDUCER_NAMES",
    "RandomDrop",
    "Reducer",
    "Reduction",
    "ReductionItem",
    "ToMe",
    "UniformTemporal",
    "at_rate",
]
