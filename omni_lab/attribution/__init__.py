"""Which input made the model say this: captum attributions over units taken from the token map.

    import omni_lab as ol
    att = ol.attribution.occlusion(lab, prompt, unit="region", baseline="remove")
    att = ol.attribution.input_occlusion(lab, prompt, unit="audio_window", seconds=0.25)
    att = ol.attribution.modality_shapley(lab, prompt, ol.attribution.Target("low, red", alternative="high, blue"))
    att = ol.attribution.integrated_gradients(lab, prompt, n_steps=64, at="embeddings")
    att.scores          # one float per token-map row (NaN where not scored): what AttributionOverlay draws
    att.to_frame(), att.top(5), att.completeness_gap

Methods are captum's (FeatureAblation, ShapleyValues, IntegratedGradients, LayerIntegratedGradients,
LLMAttribution + TextTokenInput for the text-only oracle); omni-lab supplies the units (`units.py`), the targets
(`targets.py`), the forward functions over the merged embeddings and the media (`perturb.py`,
`media_occlusion.py`), the batching, the forward-pass estimate and budget (`scoring.py`) and the result
(`result.py`). captum is imported when a method runs, never by `import omni_lab` (extra: `omni-lab[attribution]`).
"""

from ..targets import Target
from .gradients import integrated_gradients
from .media_occlusion import input_occlusion
from .methods import MAX_SHAPLEY_GROUPS, modality_shapley, occlusion
from .oracle import text_attribution
from .result import Attribution
from .scoring import BUDGET_FORWARD_PASSES, Cost, estimate
from .units import KINDS, Partition, Unit, attributable_rows, build_units

__all__ = [
    "BUDGET_FORWARD_PASSES",
    "KINDS",
    "MAX_SHAPLEY_GROUPS",
    "Attribution",
    "Cost",
    "Target",
    "Unit",
    "Partition",
    "attributable_rows",
    "build_units",
    "estimate",
    "input_occlusion",
    "integrated_gradients",
    "modality_shapley",
    "occlusion",
    "text_attribution",
]
