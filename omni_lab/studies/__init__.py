"""Studies over many runs: what token reduction costs, what pruned tokens would have contributed, how routing moves.

Each study shows a progress bar, can write its rows to SQLite or Parquet (`out=`) and encodes each prompt's media
once. `sweep` and `routing_shift` return a pandas DataFrame; `reinsertion`, `pruned_contribution` and
`expert_specialization` return small typed results (`ReinsertionResult`, `ContributionResult`, `Specialization`)
holding their tables and summary numbers. A `Dataset` holds a study's inputs as data (texts, media paths,
ShapesWorld seeds) with a stable key per row; every study runs on Ray workers with `cluster=ol.cluster.Ray(...)` and
resumes from its `out`. Given a Dataset (or a list of prompts), `reinsertion`, `pruned_contribution` and
`routing_shift` run prompt by prompt and return one table keyed by prompt (`per_prompt.py`), here or on Ray.
"""

from .contribution import pruned_contribution
from .dataset import Dataset
from .logit import LogitAttribution, direct_logit_attribution
from .matched import MatchedAblation, matched_ablation
from .patching import PatchingResult, activation_patching
from .reinsertion import reinsertion
from .results import ContributionResult, ReinsertionResult, Specialization
from .routing import expert_specialization, routing_shift, top_k_sweep
from .sweep import sweep

__all__ = [
    "ContributionResult",
    "Dataset",
    "LogitAttribution",
    "MatchedAblation",
    "PatchingResult",
    "ReinsertionResult",
    "Specialization",
    "activation_patching",
    "direct_logit_attribution",
    "expert_specialization",
    "matched_ablation",
    "pruned_contribution",
    "reinsertion",
    "routing_shift",
    "sweep",
    "top_k_sweep",
]
