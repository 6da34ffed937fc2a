"""Studies over many runs: what token reduction costs, what pruned tokens would have contributed, how routing moves.

Each study returns a pandas DataFrame, shows a progress bar, can write its rows to SQLite or Parquet (`out=`), and
encodes each prompt's media once.
"""

from .contribution import pruned_contribution
from .reinsertion import reinsertion
from .routing import expert_specialization, routing_shift
from .sweep import sweep

__all__ = ["expert_specialization", "pruned_contribution", "reinsertion", "routing_shift", "sweep"]
