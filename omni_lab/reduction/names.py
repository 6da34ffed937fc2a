"""Reducers by name at a drop rate: the one mapping the playground, the widgets and distributed studies share.

`at_rate("evs", 0.5)` is `EVS(0.5)`. Names are the lower-case class names plus the short names the playground's API
documents ("random" for RandomDrop, "uniform" for UniformTemporal); case, "-" and "_" are ignored. UniformTemporal
keeps every k-th tubelet with k = round(1 / (1 - rate)) (`UniformTemporal.at_rate`), the nearest uniform budget;
every reducer states its own `modalities` and `budget(item)`, and its `rate` (UniformTemporal's from its stride).
PyramidDrop and SparseVLM act inside the LLM at the model's own attention layers (chosen from the layer pattern), so
a rate is all they need; FastV needs its layer and has no entry here.

`CONTROL_NAMES` holds the equal-budget controls that rebuild the prompt before the encoders ("downsample"):
`at_rate` builds them too (the playground, sweeps and Ray reach them by name), but they stay out of
`REDUCER_NAMES`, the widgets' rate-slider menu, whose slider re-runs a reducer on media already encoded.
"""

from __future__ import annotations

from ..errors import OmniLabInputError
from .base import Reducer
from .divprune import DivPrune
from .downsample import Downsample
from .evs import EVS
from .merging import AudioMerge, ToMe
from .pixeldiff import PixelDiff
from .pyramiddrop import PyramidDrop
from .random_drop import RandomDrop
from .sparsevlm import SparseVLM
from .temporal import UniformTemporal
from .visionzip import VisionZip

REDUCER_NAMES = {
    "evs": EVS,
    "pixeldiff": PixelDiff,
    "random": RandomDrop,
    "randomdrop": RandomDrop,
    "uniform": UniformTemporal,
    "uniformtemporal": UniformTemporal,
    "divprune": DivPrune,
    "tome": ToMe,
    "audiomerge": AudioMerge,
    "visionzip": VisionZip,
    "pyramiddrop": PyramidDrop,
    "sparsevlm": SparseVLM,
}
CONTROL_NAMES = {"downsample": Downsample}


def at_rate(name: str, rate: float) -> Reducer:
    """The reducer called `name` dropping the fraction `rate` of its tokens.

    Args:
        name: "evs", "pixeldiff", "random" / "randomdrop", "uniform" / "uniformtemporal", "divprune", "tome",
            "audiomerge", "visionzip", "pyramiddrop", "sparsevlm" or the control "downsample" (case, "-" and "_"
            ignored, so class names work too).
        rate: fraction of tokens to drop, in [0, 1).
    Raises:
        OmniLabInputError: an unknown name or a rate outside [0, 1).
    """
    key = str(name).lower().replace("_", "").replace("-", "")
    names = REDUCER_NAMES | CONTROL_NAMES
    if key not in names:
        raise OmniLabInputError(f"reducer {name!r} is not one of {', '.join(sorted(set(names)))}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise OmniLabInputError(f"rate is the fraction of tokens to drop and must be in [0, 1), got {rate!r}")
    factory = names[key]
    return factory.at_rate(float(rate)) if factory is UniformTemporal else factory(float(rate))


def name_of(reducer) -> str:
    """The `at_rate` name of a reducer object (its lower-case class name)."""
    return type(reducer).__name__.lower()
