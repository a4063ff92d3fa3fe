"""Batched state-vector kernel, in plain torch, for a circuit written as a PennyLane function.

Four stages, one module each: :mod:`.record` reads the gates and their angle maps off the
function's PennyLane tape; :mod:`.gates` is the gate algebra on a (2^n, tokens) state and the
linear ops with their backward; :mod:`.plan` fuses the gates into passes (one class per kind:
diagonal, single-qubit, permutation) and blocks; :mod:`.execute` runs a plan on all N tokens at
once (float32/complex64 or float64/complex128, differentiable in inputs and weights), the token
part as one autograd node with an adjoint-sweep backward.
"""
from qtha.quantum.torchsim.execute import simulate, use_unitary
from qtha.quantum.torchsim.plan import Plan, build_plan, get_plan
from qtha.quantum.torchsim.record import SUPPORTED_GATES, Gate, UnsupportedGateError, record

__all__ = ["SUPPORTED_GATES", "Gate", "Plan", "UnsupportedGateError", "build_plan", "get_plan", "record", "simulate",
           "use_unitary"]
