"""Linear solvers: matrix-free stencil operators, SOR and SSOR-preconditioned CG.

`jaxsolve.linear.solve(operator, b, solver)` is the driver; the solvers are also
`lineax.AbstractLinearSolver`s, so `lineax.linear_solve(op, b, js.linear.SOR(...))`
works as well.
"""

from ._base import AbstractIterativeLinearSolver as AbstractIterativeLinearSolver
from ._operators import (
    as_operator as as_operator,
    poisson as poisson,
    PoissonOperator as PoissonOperator,
)
from ._solve import solve as solve
from ._sor import SOR as SOR
from ._ssor_pcg import SSORPCG as SSORPCG
from ._young import (
    jacobi_spectral_radius as jacobi_spectral_radius,
    young_omega as young_omega,
)
