"""Tensor networks: the MPO (TT-matrix) linear map used by QTHA (SPEC §1.4)."""
from __future__ import annotations

from qtha.tn.mpo import MPO, bond_dims, choose_path, contraction_costs, factorize

__all__ = ["MPO", "bond_dims", "choose_path", "contraction_costs", "factorize"]
