"""The QNN branch (SPEC §1.5): ansätze written once in PennyLane, run by PennyLane devices or
by the batched torch state-vector kernel of the same recorded circuit."""
from qtha.quantum.circuit import ANSATZE, register_ansatz, weight_shape
from qtha.quantum.layer import MAX_QUBITS, QNN
from qtha.quantum.settings import check_quantum

__all__ = ["ANSATZE", "MAX_QUBITS", "QNN", "check_quantum", "register_ansatz", "weight_shape"]
