"""Linear solvers: matrix-free stencil operators, SOR, SSOR-preconditioned CG and the
deep conjugate direction method (DCDM) with pretrained networks.

`jaxsolve.linear.solve(operator, b, solver)` is the driver; the solvers are also
`lineax.AbstractLinearSolver`s, so `lineax.linear_solve(op, b, js.linear.SOR(...))`
works as well.
"""

from ._base import AbstractIterativeLinearSolver as AbstractIterativeLinearSolver
from ._dcdm import DeepConjugateDirection as DeepConjugateDirection
from ._dcdm_network import DCDMNetwork as DCDMNetwork
from ._dcdm_train import (
    dcdm_loss as dcdm_loss,
    lanczos_ritz as lanczos_ritz,
    train_dcdm as train_dcdm,
)
from ._operators import (
    as_operator as as_operator,
    poisson as poisson,
    PoissonOperator as PoissonOperator,
)
from ._pretrained import pretrained as pretrained
from ._solve import solve as solve
from ._sor import SOR as SOR
from ._ssor_pcg import SSORPCG as SSORPCG
from ._young import (
    jacobi_spectral_radius as jacobi_spectral_radius,
    young_omega as young_omega,
)
