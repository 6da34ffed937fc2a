"""Token reducers acting between the projector and the LLM, and the interface they share."""

from .base import Reducer, Reduction, ReductionItem
from .evs import EVS

__all__ = ["EVS", "Reducer", "Reduction", "ReductionItem"]
