"""Bilevel optimisation: LV-HBA for coupled lower-level constraints, penalty methods,
and implicit (Hessian-vector-product) hypergradients."""

from ._base import AbstractBilevelSolver as AbstractBilevelSolver
from ._hypergradient import (
    implicit_hypergradient as implicit_hypergradient,
    Newton as Newton,
    ProjectedGradient as ProjectedGradient,
)
from ._lvhba import LVHBA as LVHBA
from ._penalty import Penalty as Penalty
from ._problem import BilevelProblem as BilevelProblem
from ._sets import (
    AbstractSet as AbstractSet,
    Affine as Affine,
    Box as Box,
    HalfSpace as HalfSpace,
    NonNegative as NonNegative,
    Polyhedron as Polyhedron,
    Reals as Reals,
)
from ._solve import solve as solve
from ._vpbgd import VPBGD as VPBGD
