"""The QNN branch (SPEC §1.5): the torch kernel against PennyLane, by hand, and its interface.

Reference checks draw fresh random inputs every run; a failure message names the seed, so a
failing draw can be replayed with ``_draw(seed=...)``.
"""
from __future__ import annotations

import math
import secrets
import warnings

import numpy as np
import pennylane as qml
import pytest
import torch

from conftest import sampled
from qtha.quantum import ANSATZE, QNN, register_ansatz, weight_shape
from qtha.quantum import torchsim
from qtha.quantum.torchsim import dense
from qtha.quantum.torchsim.plan import DiagPass
from qtha.quantum.circuit import hea_ansatz, make_qfunc, qtha_ansatz

F64 = torch.float64
TOL = dict(rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops: one intra-op thread is as fast and does not thrash when the machine is busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _draw(n_tokens: int, n_qubits: int, wshape: tuple, seed: int | None = None):
    """(seed, inputs, weights, generator): inputs in [−π, π), weights in [0, 2π), float64."""
    seed = secrets.randbits(31) if seed is None else seed
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_tokens, n_qubits, generator=g, dtype=F64) * 2 - 1) * math.pi
    w = torch.rand(wshape, generator=g, dtype=F64) * 2 * math.pi
    return seed, x, w, g


def _default_qubit(fn, n_qubits: int, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The reference: default.qubit, backprop, torch interface, one broadcast call over tokens."""
    qnode = qml.QNode(make_qfunc(fn, n_qubits), qml.device("default.qubit", wires=n_qubits),
                      interface="torch", diff_method="backprop")
    return torch.stack(list(qnode(x, w)), dim=-1)


def _value_and_grads(f, x: torch.Tensor, w: torch.Tensor, cotangent: torch.Tensor):
    """f(x, w), and the VJPs with ``cotangent`` w.r.t. fresh leaf copies of x and w."""
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = f(x, w)
    gx, gw = torch.autograd.grad(out, [x, w], cotangent)
    return out.detach(), gx, gw


def _assert_agree(a, b, what: str, seed: int) -> None:
    for name, u, v in zip(("outputs", "d/d inputs", "d/d weights"), a, b):
        torch.testing.assert_close(u, v, **TOL, msg=lambda m, name=name: f"{what}: {name} differ (seed={seed})\n{m}")


def _torch_kernel(fn, n_qubits: int, wshape: tuple, mode: str = "auto"):
    plan = torchsim.get_plan(fn, n_qubits, wshape)
    return lambda x, w: torchsim.simulate(plan, x, w, mode)


# ----------------------------------------------------------------------------- torch kernel vs PennyLane
QTHA_GRID = [(n, L) for n in (1, 2, 3, 4, 5, 7, 10) for L in (1, 2, 4)] + [(12, 1)]
HEA_GRID = [(n, L) for n in (1, 2, 3, 6, 9) for L in (1, 3)]


@pytest.mark.parametrize("ansatz,n_qubits,n_layers",
                         sampled([("qtha", n, L) for n, L in QTHA_GRID] + [("hea", n, L) for n, L in HEA_GRID], 4))
def test_torch_kernel_matches_default_qubit(ansatz, n_qubits, n_layers):
    fn = ANSATZE[ansatz][0]
    wshape = weight_shape(ansatz, n_qubits, n_layers)
    seed, x, w, g = _draw(12, n_qubits, wshape)
    ct = torch.randn(12, n_qubits, generator=g, dtype=F64)
    ref = _value_and_grads(lambda a, b: _default_qubit(fn, n_qubits, a, b), x, w, ct)
    got = _value_and_grads(_torch_kernel(fn, n_qubits, wshape), x, w, ct)
    _assert_agree(got, ref, f"torch kernel vs default.qubit ({ansatz}, n={n_qubits}, L={n_layers})", seed)


@pytest.mark.parametrize("n_qubits,n_layers", [(3, 1), (4, 2)])
def test_lightning_adjoint_matches_torch_kernel(n_qubits, n_layers):
    seed, x, _, g = _draw(8, n_qubits, (1,))
    fast = QNN(n_qubits, n_layers, dtype=F64)
    light = QNN(n_qubits, n_layers, backend="pennylane", device="lightning.qubit", diff_method="adjoint", dtype=F64)
    light.load_state_dict(fast.state_dict())
    ct = torch.randn(8, n_qubits, generator=g, dtype=F64)

    def run(q):
        xx = x.clone().requires_grad_(True)
        out = q(xx)
        gx, gw = torch.autograd.grad(out, [xx, q.weights], ct)
        return out.detach(), gx, gw

    _assert_agree(run(light), run(fast), f"lightning.qubit adjoint vs torch kernel (n={n_qubits}, L={n_layers})", seed)


def test_gradient_transforms_get_per_token_tapes():
    """parameter-shift cannot differentiate broadcast tapes: the layer splits tokens and still agrees."""
    seed, x, _, g = _draw(3, 2, (1,))
    fast = QNN(2, 1, dtype=F64)
    shift = QNN(2, 1, backend="pennylane", diff_method="parameter-shift", dtype=F64)
    shift.load_state_dict(fast.state_dict())
    ct = torch.randn(3, 2, generator=g, dtype=F64)
    outs = []
    for q in (shift, fast):
        xx = x.clone().requires_grad_(True)
        out = q(xx)
        outs.append((out.detach(), *torch.autograd.grad(out, [xx, q.weights], ct)))
    _assert_agree(outs[0], outs[1], "parameter-shift vs torch kernel", seed)


def test_shots_are_set_on_the_qnode_without_deprecation_warnings():
    q = QNN(2, 1, backend="pennylane", shots=4000, dtype=F64)
    ref = QNN(2, 1, dtype=F64)
    ref.load_state_dict(q.state_dict())
    x = torch.rand(3, 2, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = q(x)
    assert out.shape == (3, 2) and out.dtype == F64
    assert (out - ref(x)).abs().max() < 0.12  # ≈ 8σ of 4000 shots


# ----------------------------------------------------------------------------- by hand
def test_single_qubit_is_an_ry_chain():
    """n_q = 1: the CRZ rings are empty, so ⟨Z⟩ = cos(Σ_ℓ (u + w[ℓ,1] + w[ℓ,3]))."""
    seed, x, w, _ = _draw(10, 1, (3, 4, 1))
    q = QNN(1, 3, dtype=F64)
    with torch.no_grad():
        q.weights.copy_(w)
        expected = torch.cos(3 * x[:, 0] + w[:, 1, 0].sum() + w[:, 3, 0].sum()).unsqueeze(-1)
        torch.testing.assert_close(q(x), expected, **TOL, msg=f"seed={seed}")


def test_hea_two_qubits_by_hand():
    """RY(a)⊗RY(b) then CNOT 0→1: ⟨Z0⟩ = cos a, ⟨Z1⟩ = ⟨Z0 Z1⟩ before the CNOT = cos a · cos b."""
    seed, x, w, _ = _draw(10, 2, (1, 1, 2))
    q = QNN(2, 1, ansatz="hea", dtype=F64)
    with torch.no_grad():
        q.weights.copy_(w)
        a, b = x[:, 0] + w[0, 0, 0], x[:, 1] + w[0, 0, 1]
        torch.testing.assert_close(q(x), torch.stack([torch.cos(a), torch.cos(a) * torch.cos(b)], -1), **TOL,
                                   msg=f"seed={seed}")


def _ry(t: float) -> np.ndarray:
    return np.array([[math.cos(t / 2), -math.sin(t / 2)], [math.sin(t / 2), math.cos(t / 2)]])


def _crz(t: float, control: int, target: int) -> np.ndarray:
    """4×4 CRZ on qubits (0, 1), basis index 2·q0 + q1 (PennyLane's order: wire 0 most significant)."""
    d = np.ones(4, dtype=complex)
    for idx in range(4):
        bits = (idx >> 1) & 1, idx & 1
        if bits[control]:
            d[idx] = np.exp(-0.5j * t) if bits[target] == 0 else np.exp(0.5j * t)
    return np.diag(d)


def test_qtha_two_qubits_by_hand():
    """SPEC §1.5 for n_q = 2, L = 1 with textbook 4×4 matrices — independent of both backends."""
    seed, x, w, _ = _draw(6, 2, (1, 4, 2))
    q = QNN(2, 1, dtype=F64)
    with torch.no_grad():
        q.weights.copy_(w)
    got = q(x).detach().numpy()
    W = w[0].numpy()
    eye = np.eye(2)
    for tok in range(x.shape[0]):
        u = x[tok].numpy()
        psi = np.zeros(4, dtype=complex)
        psi[0] = 1
        psi = np.kron(_ry(u[0]), _ry(u[1])) @ psi
        psi = _crz(W[0, 1], 1, 0) @ _crz(W[0, 0], 0, 1) @ psi  # ring i → i+1: 0→1, 1→0
        psi = np.kron(_ry(W[1, 0]), _ry(W[1, 1])) @ psi
        psi = _crz(W[2, 1], 1, 0) @ _crz(W[2, 0], 0, 1) @ psi  # ring i → i−1 (mod 2): 0→1, 1→0
        psi = np.kron(_ry(W[3, 0]), eye) @ np.kron(eye, _ry(W[3, 1])) @ psi
        p = np.abs(psi) ** 2
        expected = [p[0] + p[1] - p[2] - p[3], p[0] - p[1] + p[2] - p[3]]
        np.testing.assert_allclose(got[tok], expected, rtol=1e-9, atol=1e-12, err_msg=f"seed={seed}, token {tok}")


# ----------------------------------------------------------------------------- kernel paths
@pytest.mark.parametrize("ansatz,n_qubits,n_layers", [("qtha", 2, 3), ("qtha", 5, 2), ("qtha", 8, 1), ("hea", 4, 2),
                                                      ("qtha", 9, 2)])
def test_unitary_and_gate_paths_agree(ansatz, n_qubits, n_layers):
    """Whatever the cost model picks, the result is the same: force each path and compare."""
    fn = ANSATZE[ansatz][0]
    wshape = weight_shape(ansatz, n_qubits, n_layers)
    seed, x, w, g = _draw(9, n_qubits, wshape)
    ct = torch.randn(9, n_qubits, generator=g, dtype=F64)
    gates = _value_and_grads(_torch_kernel(fn, n_qubits, wshape, "gates"), x, w, ct)
    unitary = _value_and_grads(_torch_kernel(fn, n_qubits, wshape, "unitary"), x, w, ct)
    auto = _value_and_grads(_torch_kernel(fn, n_qubits, wshape, "auto"), x, w, ct)
    _assert_agree(unitary, gates, f"unitary vs gate-by-gate ({ansatz}, n={n_qubits}, L={n_layers})", seed)
    _assert_agree(auto, gates, f"auto vs gate-by-gate ({ansatz}, n={n_qubits}, L={n_layers})", seed)


def test_cost_model_picks_each_path():
    plan_small = torchsim.get_plan(qtha_ansatz, 3, (1, 4, 3))
    plan_large = torchsim.get_plan(qtha_ansatz, 10, (1, 4, 10))
    (small,), (large,) = plan_small.blocks, plan_large.blocks
    assert torchsim.use_unitary(small, 3, 4096)  # 8×8 unitary: one matmul beats 4 fused passes
    assert not torchsim.use_unitary(large, 10, 4096)  # 1024×1024 per token is dearer than the passes
    assert not torchsim.use_unitary(small, 3, 1)  # one token: building U costs more than applying gates


def test_plan_built_or_first_run_without_grad_still_differentiates():
    """The angle map comes from autograd, and the first call may come from a validation loop."""
    with torch.no_grad():
        plan = torchsim.build_plan(qtha_ansatz, 3, (1, 4, 3))
    assert {g.src for g in plan.gates} == {"input", "weight"}
    seed, x, w, _ = _draw(4, 3, (1, 4, 3))
    with torch.inference_mode():
        first = torchsim.simulate(plan, x, w)
    w = w.requires_grad_(True)
    out = torchsim.simulate(plan, x, w)
    (gw,) = torch.autograd.grad(out.sum(), [w])
    torch.testing.assert_close(out.detach(), first, **TOL, msg=f"seed={seed}")
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_float32_kernel_close_to_float64():
    seed, x, w, _ = _draw(16, 6, (2, 4, 6))
    plan = torchsim.get_plan(qtha_ansatz, 6, (2, 4, 6))
    out32 = torchsim.simulate(plan, x.float(), w.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), torchsim.simulate(plan, x, w), rtol=0, atol=2e-5, msg=f"seed={seed}")


# ----------------------------------------------------------------------------- the module interface
def test_shapes_dtypes_and_autocast():
    q = QNN(4, 2)
    assert q.weights.shape == (2, 4, 4) and q.weights.dtype == torch.float32
    assert -math.pi <= q.weights.min() < 0 and q.weights.max() < math.pi  # U[−π, π), as torchquantum
    x = torch.randn(3, 5, 4)
    out = q(x)
    assert out.shape == (3, 5, 4) and out.dtype == torch.float32
    assert q(x[0, 0]).shape == (4,)
    torch.testing.assert_close(q(x.reshape(15, 4)).reshape(3, 5, 4), out)
    assert q(torch.randn(0, 4)).shape == (0, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin = torch.nn.Linear(4, 4)
        assert lin(x).dtype == torch.bfloat16  # autocast is on here...
        under = q(x)
        from_bf16 = q(x.bfloat16())
    assert under.dtype == torch.float32 and from_bf16.dtype == torch.float32  # ...but not inside the QNN
    assert torch.equal(under, out)
    torch.testing.assert_close(from_bf16, q(x.bfloat16().float()))
    q64 = QNN(3, 1, dtype=F64)
    assert q64(torch.randn(2, 3)).dtype == F64 and q64.weights.dtype == F64
    with pytest.raises(ValueError, match="last dim must be n_qubits=4"):
        q(torch.randn(2, 3))


@pytest.mark.parametrize("backend", ["torch", "pennylane"])
def test_double_computes_in_float64_end_to_end(backend):
    """``QNN(...).double()``: float64 out, and float64 agreement with default.qubit (not float32's 1e-6)."""
    q = QNN(4, 2, backend=backend).double()
    seed, x, _, g = _draw(9, 4, (1,))
    out = q(x)
    assert q.dtype == F64 and out.dtype == F64
    ref = _default_qubit(qtha_ansatz, 4, x, q.weights.detach())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10, msg=f"seed={seed}")
    back = q.float()
    assert back(x.float()).dtype == torch.float32 and back.dtype == torch.float32
    assert q.bfloat16().dtype == torch.float32  # a whole-model half cast never makes the branch half precision


def test_num_params_and_repr():
    assert QNN.num_params(4, 1) == 16 == QNN(4, 1).weights.numel()
    assert QNN.num_params(5, 3, "hea") == 15 == QNN(5, 3, ansatz="hea").weights.numel()
    assert weight_shape("qtha", 4, 2) == (2, 4, 4) and weight_shape("hea", 4, 2) == (2, 1, 4)
    assert "n_qubits=4" in repr(QNN(4, 1)) and "ansatz='qtha'" in repr(QNN(4, 1))
    assert "lightning.qubit" in repr(QNN(2, 1, backend="pennylane", device="lightning.qubit"))


@pytest.mark.parametrize("kwargs,named", [
    (dict(n_qubits=0), "n_qubits=0"), (dict(n_qubits=21), "n_qubits=21"),
    (dict(n_qubits=2, n_layers=0), "n_layers=0"), (dict(n_qubits=2, ansatz="foo"), "ansatz='foo'"),
    (dict(n_qubits=2, backend="cuda"), "backend='cuda'"), (dict(n_qubits=2, shots=100), "shots=100"),
    (dict(n_qubits=2, dtype=torch.bfloat16), "dtype=torch.bfloat16"),
    (dict(n_qubits=2, backend="pennylane", device="no.such.device"), "device='no.such.device'"),
])
def test_bad_arguments_raise_one_line_value_errors(kwargs, named):
    with pytest.raises(ValueError) as info:
        QNN(**kwargs)
    assert named in str(info.value)
    assert "allowed" in str(info.value)


# ----------------------------------------------------------------------------- new ansätze for free
def _rx_cz_ansatz(inputs, weights, n_qubits):
    """RX re-upload, CZ ring, RY(w), RZ(w/2 + 1/4): gates and affine angles the built-ins do not use."""
    for layer in range(weights.shape[0]):
        for i in range(n_qubits):
            qml.RX(inputs[..., i], wires=i)
        for i in range(n_qubits if n_qubits > 2 else n_qubits - 1):
            qml.CZ(wires=[i, (i + 1) % n_qubits])
        for i in range(n_qubits):
            qml.RY(weights[layer, 0, i], wires=i)
            qml.RZ(0.5 * weights[layer, 1, i] + 0.25, wires=i)
        qml.Hadamard(wires=0)


def _template_ansatz(inputs, weights, n_qubits):
    """PennyLane templates: the kernel runs their decompositions."""
    for layer in range(weights.shape[0]):
        qml.AngleEmbedding(inputs, wires=range(n_qubits), rotation="Y")
        qml.BasicEntanglerLayers(weights[layer:layer + 1], wires=range(n_qubits), rotation=qml.RX)


def _mixed_ansatz(inputs, weights, n_qubits):
    """A first layer mixing data and weight angles, a SWAP, controlled phases and an IsingZZ."""
    for layer in range(weights.shape[0]):
        qml.RY(inputs[..., 0], wires=0)
        qml.RY(weights[layer, 0], wires=1)
        qml.RY(2.0 * inputs[..., 2] - 0.5, wires=2)
        qml.PhaseShift(weights[layer, 1], wires=2)
        qml.SWAP(wires=[0, 2])
        qml.ControlledPhaseShift(inputs[..., 1], wires=[1, 0])
        qml.IsingZZ(weights[layer, 2], wires=[1, 2])
        qml.PauliY(wires=1)
        qml.CNOT(wires=[2, 1])
        qml.RX(weights[layer, 0], wires=1)


@pytest.mark.parametrize("name,fn,shape_fn", [
    ("test_rx_cz", _rx_cz_ansatz, lambda n, L: (L, 2, n)),
    ("test_templates", _template_ansatz, lambda n, L: (L, n)),
    ("test_mixed", _mixed_ansatz, lambda n, L: (L, 3)),
])
def test_registered_pennylane_ansatz_gets_the_torch_fast_path(name, fn, shape_fn):
    register_ansatz(name, fn, shape_fn)
    try:
        q = QNN(3, 2, ansatz=name, dtype=F64)
        assert q.weights.shape == shape_fn(3, 2)
        assert all(g.name in torchsim.SUPPORTED_GATES for g in q._plan.gates)
        seed, x, _, g = _draw(7, 3, (1,))
        ct = torch.randn(7, 3, generator=g, dtype=F64)
        w = q.weights.detach()
        got = _value_and_grads(lambda a, b: torchsim.simulate(q._plan, a, b), x, w, ct)
        ref = _value_and_grads(lambda a, b: _default_qubit(fn, 3, a, b), x, w, ct)
        _assert_agree(got, ref, f"registered ansatz {name!r}: torch kernel vs default.qubit", seed)
        pl = QNN(3, 2, ansatz=name, backend="pennylane", dtype=F64)
        pl.load_state_dict(q.state_dict())
        torch.testing.assert_close(pl(x), q(x), **TOL)
    finally:
        ANSATZE.pop(name, None)


@pytest.mark.parametrize("name,n_qubits,n_layers", [("qtha", 5, 3), ("qtha", 9, 2), ("hea", 4, 3), ("hea", 7, 2),
                                                     ("rx_cz", 3, 2), ("rx_cz", 4, 3), ("mixed", 3, 2)])
def test_diagonal_data_rewrite_matches_the_per_wire_path(name, n_qubits, n_layers):
    """Per-token RX / RY rewritten as basis change · RZ · change back: every data pass is diagonal, and
    values and gradients match the per-wire 2×2 path on both fixed-block paths."""
    fn, shape_fn = {"qtha": (qtha_ansatz, lambda n, L: (L, 4, n)), "hea": (hea_ansatz, lambda n, L: (L, 1, n)),
                    "rx_cz": (_rx_cz_ansatz, lambda n, L: (L, 2, n)),
                    "mixed": (_mixed_ansatz, lambda n, L: (L, 3))}[name]
    wshape = shape_fn(n_qubits, n_layers)
    new = torchsim.build_plan(fn, n_qubits, wshape)
    old = torchsim.build_plan(fn, n_qubits, wshape, diagonal_data=False)
    assert any(b.data for b in new.blocks) and all(isinstance(p, DiagPass) for b in new.blocks if b.data for p in b.passes)
    seed, x, w, g = _draw(9, n_qubits, wshape)
    ct = torch.randn(9, n_qubits, generator=g, dtype=F64)
    ref = _value_and_grads(lambda a, b: torchsim.simulate(old, a, b, "gates"), x, w, ct)
    for mode in ("gates", "unitary"):
        got = _value_and_grads(lambda a, b: torchsim.simulate(new, a, b, mode), x, w, ct)
        _assert_agree(got, ref, f"diagonal re-uploads vs per-wire ({name}, n={n_qubits}, L={n_layers}, {mode})", seed)


def test_affine_angle_map_is_recorded():
    plan = torchsim.build_plan(_rx_cz_ansatz, 2, (1, 2, 2))
    rz = [g for g in plan.gates if g.name == "RZ"]
    assert [(g.src, g.idx) for g in rz] == [("weight", 2), ("weight", 3)]
    assert all(math.isclose(g.coeff, 0.5) and math.isclose(g.offset, 0.25) for g in rz)
    assert {g.name for g in plan.gates} == {"RX", "CZ", "RY", "RZ", "Hadamard"}


class _Mystery(qml.operation.Operation):
    num_wires = 1
    num_params = 0


@pytest.mark.parametrize("body,message", [
    (lambda x, w: _Mystery(wires=0), "'_Mystery'"),
    (lambda x, w: qml.RY(x[..., 0] ** 2, wires=0), "not an affine function"),
    (lambda x, w: qml.RY(x[..., 0] + w[0], wires=0), "depends on 2 input/weight entries"),
])
def test_unsupported_circuits_fail_clearly(body, message):
    def ansatz(inputs, weights, n_qubits):
        body(inputs, weights)

    with pytest.raises(torchsim.UnsupportedGateError, match=message):
        torchsim.build_plan(ansatz, 1, (1,))


def test_hea_ring_shapes():
    """The CNOT ring: none for one qubit, only 0→1 for two, i → i+1 (mod n) otherwise."""
    def cnots(n):
        return [g.wires for g in torchsim.record(hea_ansatz, n, (1, 1, n)) if g.name == "CNOT"]

    assert cnots(1) == [] and cnots(2) == [(0, 1)] and cnots(3) == [(0, 1), (1, 2), (2, 0)]
    crz = [g.wires for g in torchsim.record(qtha_ansatz, 2, (1, 4, 2)) if g.name == "CRZ"]
    assert crz == [(0, 1), (1, 0), (0, 1), (1, 0)]


@pytest.mark.parametrize(("n", "layers", "ansatz"), [(2, 3, "qtha"), (3, 2, "hea"), (4, 4, "qtha"), (5, 1, "hea"),
                                                     (6, 2, "qtha"), (7, 2, "qtha")])
def test_no_grad_calls_with_kept_unitaries_agree_with_the_gate_path(n, layers, ansatz):
    """Without gradients and with the unitaries kept, small circuits run as stacked matrices (``dense``): the
    same ⟨Z⟩ as the gate-by-gate path (up to 7 qubits, where the gate path is used again)."""
    q = QNN(n, layers, ansatz=ansatz, dtype=torch.float64)
    x = torch.randn(9, n, dtype=torch.float64)
    with torch.no_grad():
        kept = [q(x), q(x)]
    assert ("dense" in q._sim_cache) == (n <= dense.MAX_DENSE_QUBITS)
    gates = torchsim.simulate(q._plan, x, q.weights.detach(), "gates")
    for out in kept:
        torch.testing.assert_close(out, gates, rtol=1e-12, atol=1e-12)


def test_no_grad_calls_reuse_the_unitaries_until_the_weights_change():
    """Generation calls the QNN once per token: without gradients the fixed blocks' unitaries are kept,
    and an in-place update of the weights (an optimiser step) invalidates them."""
    q = QNN(3, 2, dtype=torch.float64)
    x = torch.rand(5, 3, dtype=torch.float64)
    with torch.no_grad():
        first = q(x)
        key = q._sim_cache["key"]
        assert torch.equal(q(x), first) and q._sim_cache["key"] == key
        q.weights.add_(0.3)
        moved = q(x)
    assert q._sim_cache["key"] != key
    fresh = torchsim.simulate(q._plan, x, q.weights.detach(), "unitary")  # rebuilt, uncached
    torch.testing.assert_close(moved, fresh, rtol=1e-13, atol=1e-13)
    assert not torch.allclose(moved, first)
    out = q(x.requires_grad_(True))  # with gradients: built afresh, differentiable
    out.sum().backward()
    assert q.weights.grad is not None and x.grad is not None
