"""Online tuning of the relaxation parameter omega across a sequence of linear
systems, from the iteration count alone (Khodak et al., "Learning to Relax",
ICLR 2024).

Policies (pure, optax-shaped: `init(key)`, `select(state, context)`,
`update(state, arm, cost, context)`): `TsallisINF` (bandit; approaches the best fixed
omega in hindsight), `TsallisINFCB` and `ChebCB` (contextual; approach the
instance-optimal omega). Driver: `solve_sequence` (one compiled `lax.scan`).
Evaluation: `cost_table`, `replay`, `best_fixed`, `instance_optimal`,
`hindsight_ratio`, `young_omegas`.
"""

from ._base import AbstractPolicy as AbstractPolicy
from ._chebcb import (
    ChebCB as ChebCB,
    ChebCBState as ChebCBState,
    chebyshev_features as chebyshev_features,
)
from ._oracles import (
    best_fixed as best_fixed,
    cost_table as cost_table,
    CostTable as CostTable,
    hindsight_ratio as hindsight_ratio,
    instance_optimal as instance_optimal,
    young_omegas as young_omegas,
)
from ._sequence import (
    replay as replay,
    ReplaySolution as ReplaySolution,
    SequenceSolution as SequenceSolution,
    solve_sequence as solve_sequence,
)
from ._tsallis import (
    tsallis_inf_probabilities as tsallis_inf_probabilities,
    TsallisINF as TsallisINF,
    TsallisINFCB as TsallisINFCB,
    TsallisINFCBState as TsallisINFCBState,
    TsallisINFState as TsallisINFState,
)
