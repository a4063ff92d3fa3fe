"""Quantum realism: depolarizing noise and readout errors against closed forms, shots, presets, validation,
the evaluation cache, device retries and batching, and a noisy re-evaluation of a trained tiny QTHA."""
from __future__ import annotations

import json
import math

import numpy as np
import pennylane as qml
import pytest
import torch
from pennylane.devices import DefaultMixed, DefaultQubit

from conftest import sampled, tiny_overrides
from qtha import eval as qeval
from qtha.compose import compose_checked
from qtha.errors import ConfigError
from qtha.quantum import ANSATZE, QNN, register_ansatz, remote
from qtha.quantum.noise import NoiseSpec, depolarizing2_kraus
from qtha.quantum.remote import DeviceExecutionError
from qtha.results import load_record
from qtha.train import train

F64 = torch.float64
PAPER_READOUT = ((0.95, 0.05), (0.1, 0.9))


def _ry_ansatz(inputs, weights, n_qubits):
    """RY(u_0) on wire 0: one 1-qubit gate, so one depolarizing channel."""
    qml.RY(inputs[..., 0], wires=0)


def _ry_crz_ansatz(inputs, weights, n_qubits):
    """RY(u_0) on wire 0, then CRZ(w) 0 → 1: one 1-qubit and one 2-qubit gate."""
    qml.RY(inputs[..., 0], wires=0)
    qml.CRZ(weights[0, 0], wires=[0, 1])


@pytest.fixture
def toy_ansatze():
    register_ansatz("test_ry", _ry_ansatz, lambda n, L: (L, 1))
    register_ansatz("test_ry_crz", _ry_crz_ansatz, lambda n, L: (L, 1))
    yield
    ANSATZE.pop("test_ry", None)
    ANSATZE.pop("test_ry_crz", None)


def _mixed(n_qubits, ansatz="qtha", n_layers=1, **kw):
    return QNN(n_qubits, n_layers, ansatz=ansatz, backend="pennylane", device="default.mixed", dtype=F64, **kw)


THETAS = torch.tensor([[0.0], [0.4], [1.3], [2.5], [-2.0]], dtype=F64)


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("p", [0.01, 0.1, 0.3])
def test_depolarizing_after_ry_scales_z_by_one_minus_four_thirds_p(toy_ansatze, p):
    """PennyLane's DepolarizingChannel: ρ → (1−p)ρ + p/3 (XρX + YρY + ZρZ), so ⟨Z⟩ = (1 − 4p/3) cos θ."""
    q = _mixed(1, "test_ry", noise=NoiseSpec("depolarizing", p1=p))
    expected = (1 - 4 * p / 3) * torch.cos(THETAS)
    torch.testing.assert_close(q(THETAS), expected, rtol=0, atol=1e-12)
    if p == 0.1:  # the number quoted in the report
        assert q(THETAS)[1, 0].item() == pytest.approx(0.8666666666666667 * math.cos(0.4), abs=1e-12)


def test_depolarizing_acts_after_every_gate_of_the_qtha_ansatz():
    """n_q = 1: three RY gates (u, w[0,1], w[0,3]), each followed by the channel: (1 − 4p/3)^3 cos(Σ angles)."""
    p = 0.05
    q = _mixed(1, noise=NoiseSpec("depolarizing", p1=p))
    w = q.weights.detach()
    expected = (1 - 4 * p / 3) ** 3 * torch.cos(THETAS + w[0, 1, 0] + w[0, 3, 0])
    torch.testing.assert_close(q(THETAS), expected, rtol=0, atol=1e-12)


def test_two_qubit_depolarizing_scales_each_wire_by_one_minus_sixteen_fifteenths_p(toy_ansatze):
    """After CRZ: 8 of the 15 non-identity two-qubit Paulis anticommute with Z_i, so ⟨Z_i⟩ gains (1 − 16p/15)."""
    p1, p2 = 0.1, 0.2
    q = _mixed(2, "test_ry_crz", noise=NoiseSpec("depolarizing", p1=p1, p2=p2))
    x = torch.cat([THETAS, torch.zeros_like(THETAS)], dim=1)
    expected = torch.stack([(1 - 4 * p1 / 3) * (1 - 16 * p2 / 15) * torch.cos(THETAS[:, 0]),
                            torch.full((5,), 1 - 16 * p2 / 15, dtype=F64)], dim=1)
    torch.testing.assert_close(q(x), expected, rtol=0, atol=1e-12)
    kraus = depolarizing2_kraus(p2)
    assert len(kraus) == 16
    np.testing.assert_allclose(sum(k.conj().T @ k for k in kraus), np.eye(4), atol=1e-12)  # trace preserving


def test_gates_on_more_than_two_wires_are_refused_not_left_noiseless():
    def toffoli(inputs, weights, n_qubits):
        qml.RY(inputs[..., 0], wires=0)
        qml.Toffoli(wires=[0, 1, 2])

    register_ansatz("test_toffoli", toffoli, lambda n, L: (L, 1))
    try:
        q = _mixed(3, "test_toffoli", noise=NoiseSpec("depolarizing", 0.01, 0.01))
        with pytest.raises(ValueError, match="gate Toffoli acts on 3 wires"):
            q(torch.zeros(2, 3, dtype=F64))
    finally:
        ANSATZE.pop("test_toffoli", None)


def test_noisy_shots_agree_within_five_sigma(toy_ansatze):
    p, shots = 0.1, 20_000
    q = _mixed(1, "test_ry", noise=NoiseSpec("depolarizing", p1=p), shots=shots)
    z = (1 - 4 * p / 3) * torch.cos(THETAS)
    sigma = torch.sqrt((1 - z ** 2) / shots).clamp_min(1 / shots)
    with torch.no_grad():
        got = q(THETAS)
    assert ((got - z).abs() <= 5 * sigma).all(), (got, z, sigma)


def test_readout_confusion_is_affine_in_z():
    """R = [[P(0|0), P(1|0)], [P(0|1), P(1|1)]]: ⟨Z⟩_meas = a + b z, a = P(0|0) + P(0|1) − 1, b = P(0|0) − P(0|1)."""
    spec = NoiseSpec.of(readout=[[0.95, 0.05], [0.1, 0.9]])
    a, b = spec.readout_affine()
    assert (a, b) == pytest.approx((0.05, 0.85))
    z = torch.cos(THETAS)
    p0 = (1 + z) / 2
    measured_p0 = p0 * 0.95 + (1 - p0) * 0.1                          # from the confusion matrix directly
    torch.testing.assert_close(spec.apply_readout(z), 2 * measured_p0 - 1, rtol=0, atol=1e-12)
    # the same as a readout channel before the measurement, on the density-matrix simulator
    e0, e1 = 0.05, 0.1  # P(1|0), P(0|1)
    kraus = [np.diag([math.sqrt(1 - e0), math.sqrt(1 - e1)]), np.array([[0, 0], [math.sqrt(e0), 0]]),
             np.array([[0, math.sqrt(e1)], [0, 0]])]

    @qml.qnode(qml.device("default.mixed", wires=1), interface="torch")
    def channel(theta):
        qml.RY(theta, wires=0)
        qml.QubitChannel(kraus, wires=0)
        return qml.expval(qml.Z(0))

    torch.testing.assert_close(spec.apply_readout(z)[:, 0], channel(THETAS[:, 0]), rtol=0, atol=1e-12)
    # on both backends: the QNN applies it to its exact ⟨Z⟩
    for backend in ("torch", "pennylane"):
        q = QNN(1, 1, backend=backend, dtype=F64, noise=spec)
        w = q.weights.detach()
        torch.testing.assert_close(q(THETAS), a + b * torch.cos(THETAS + w[0, 1, 0] + w[0, 3, 0]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_qubits,n_layers", [(3, 1), (4, 2)])
def test_noise_none_on_default_mixed_equals_the_torch_kernel(n_qubits, n_layers):
    g = torch.Generator().manual_seed(n_qubits)
    fast = QNN(n_qubits, n_layers, dtype=F64)
    mixed = _mixed(n_qubits, n_layers=n_layers)
    mixed.load_state_dict(fast.state_dict())
    x = (torch.rand(6, n_qubits, generator=g, dtype=F64) * 6 - 3)
    outs = []
    for q in (mixed, fast):
        xx = x.clone().requires_grad_(True)
        out = q(xx)
        outs.append((out.detach(), *torch.autograd.grad(out.sum(), [xx, q.weights])))
    for got, ref in zip(*outs):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("preset,p", [("noisy_paper_low", 0.01), ("noisy_paper_high", 0.1)])
def test_noisy_presets_compose(preset, p):
    q = compose_checked([f"quantum={preset}", "adapter=qtha"]).quantum
    assert (q.backend, q.device, q.noise, q.p1, q.p2) == ("pennylane", "default.mixed", "depolarizing", p, p)
    assert [list(r) for r in q.readout] == [[0.95, 0.05], [0.1, 0.9]]
    qnn = QNN.from_config(2, 1, "qtha", q)
    assert qnn.noise == NoiseSpec("depolarizing", p, p, PAPER_READOUT)


def test_shots_preset_composes():
    q = compose_checked(["quantum=shots_1000", "adapter=qtha"]).quantum
    assert (q.backend, q.shots, q.noise) == ("pennylane", 1000, "none")


@pytest.mark.parametrize("overrides,message", sampled([
    (["quantum.noise=depolarizing", "quantum.p1=0.01"],
     "quantum.noise=depolarizing needs a device that runs noise channels; allowed: quantum.backend=pennylane "
     "quantum.device=default.mixed"),
    (["quantum=noisy_paper_low", "quantum.device=default.qubit"], "quantum.device='default.qubit' does not"),
    (["quantum=noisy_paper_low", "quantum.device=lightning.qubit"], "quantum.device='lightning.qubit' does not"),
    (["quantum=noisy_paper_low", "quantum.p1=1.5"], "quantum.p1=1.5 is not a probability"),
    (["quantum=noisy_paper_low", "quantum.p2=-0.1"], "quantum.p2=-0.1 is not a probability"),
    (["quantum.p1=0.1"], "quantum.p1=0.1 has no effect with quantum.noise=none"),
    (["quantum.noise=thermal"], "quantum.noise='thermal' is not allowed"),
    (["quantum=noisy_paper_low", "quantum.readout=[[0.9,0.2],[0.1,0.9]]"], "not a 2x2 row-stochastic matrix"),
    (["quantum=noisy_paper_low", "quantum.readout=[[1.0,0.0]]"], "not a 2x2 row-stochastic matrix"),
    (["quantum=shots_1000", "quantum.shots=-5"], "quantum.shots=-5 is invalid"),
    (["quantum=shots_1000", "quantum.diff_method=adjoint"], "quantum.diff_method=adjoint needs exact pure states"),
    (["quantum=noisy_paper_low", "quantum.diff_method=adjoint"], "not quantum.noise=depolarizing"),
    (["quantum.backend=pennylane", "quantum.device=no.such.device"], "default.mixed, default.qubit"),
    (["quantum.retries=-1"], "quantum.retries=-1 is invalid"),
    (["quantum.backoff_s=-1"], "quantum.backoff_s=-1.0 is invalid"),
    (["quantum.cache_size=-1"], "quantum.cache_size=-1 is invalid"),
], 3))
def test_bad_quantum_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError) as info:
        compose_checked([*overrides, "adapter=qtha"])
    assert message in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_the_qnn_raises_the_same_checks():
    with pytest.raises(ValueError, match="noise=depolarizing needs a device that runs noise channels"):
        QNN(2, 1, noise=NoiseSpec("depolarizing", p1=0.01))
    with pytest.raises(ValueError, match="device='lightning.qubit' does not"):
        QNN(2, 1, backend="pennylane", device="lightning.qubit", noise=NoiseSpec("depolarizing", p1=0.01))
    with pytest.raises(ValueError, match="is not an installed PennyLane device; allowed: .*default.mixed"):
        QNN(2, 1, backend="pennylane", device="no.such.device")


# ----------------------------------------------------------------------------- remote-device machinery
@pytest.fixture
def executions(monkeypatch):
    """Counts device.execute calls and the tapes in them, on default.qubit and default.mixed."""
    seen = {"calls": 0, "tapes": 0}
    for cls in (DefaultQubit, DefaultMixed):
        original = cls.execute

        def counted(self, circuits, execution_config=None, _original=original):
            seen["calls"] += 1
            seen["tapes"] += 1 if isinstance(circuits, qml.tape.QuantumScript) else len(circuits)
            return _original(self, circuits, execution_config)

        monkeypatch.setattr(cls, "execute", counted)
    return seen


@pytest.mark.parametrize("shots", [None, 500])
def test_all_tokens_go_to_the_device_in_one_call(executions, shots):
    q = QNN(3, 1, backend="pennylane", device="default.mixed", shots=shots, dtype=F64,
            noise=NoiseSpec("depolarizing", 0.01, 0.01))
    q(torch.rand(7, 3, dtype=F64))
    assert executions["calls"] == 1
    assert executions["tapes"] == (1 if shots is None else 7)  # one broadcast tape, or a batch of per-token tapes


def test_cache_reuses_results_without_executing(executions):
    q = _mixed(2, noise=NoiseSpec("depolarizing", 0.1, 0.1), cache_size=64)
    x = torch.rand(5, 2, dtype=F64)
    x[3] = x[1]  # a repeated token runs once
    with torch.no_grad():
        first = q(x)
        assert executions == {"calls": 1, "tapes": 1} and len(q._cache) == 4
        again = q(x)
        assert executions["calls"] == 1 and torch.equal(again, first)  # served from the cache
        more = q(torch.cat([x[:2], torch.rand(1, 2, dtype=F64)]))
        assert executions["calls"] == 2 and torch.equal(more[:2], first[:2])
    assert (q._cache.hits, q._cache.misses) == (1 + 5 + 2, 4 + 1)
    q(x)  # gradients needed (weights require grad): the cache is bypassed
    assert executions["calls"] == 3
    with torch.no_grad():
        q.weights.add_(0.1)
        q(x)  # new weights: a new key
    assert executions["calls"] == 4


def test_cache_is_bounded():
    q = _mixed(2, cache_size=3)
    with torch.no_grad():
        q(torch.rand(5, 2, dtype=F64))
    assert len(q._cache) == 3


def _flaky(monkeypatch, fail_first: int, every_call: bool = False):
    """default.qubit's execute fails ``fail_first`` times (per call if ``every_call``), then works."""
    state = {"attempts": 0, "failures": 0, "calls": 0}
    original = DefaultQubit.execute

    def flaky(self, circuits, execution_config=None):
        state["attempts"] += 1
        if state["failures"] < fail_first:
            state["failures"] += 1
            raise ConnectionError("backend queue unavailable")
        state["calls"] += 1
        if every_call:
            state["failures"] = 0
        return original(self, circuits, execution_config)

    monkeypatch.setattr(DefaultQubit, "execute", flaky)
    return state


def test_retries_with_backoff_then_success(monkeypatch):
    sleeps = []
    monkeypatch.setattr(remote.time, "sleep", sleeps.append)
    ref = QNN(2, 1, dtype=F64)
    x = torch.rand(4, 2, dtype=F64)
    state = _flaky(monkeypatch, fail_first=2)
    q = QNN(2, 1, backend="pennylane", dtype=F64, retries=2, backoff_s=0.5)
    q.load_state_dict(ref.state_dict())
    torch.testing.assert_close(q(x), ref(x))
    assert state["attempts"] == 3 and sleeps == [0.5, 1.0]


def test_retries_exhausted_raise_a_clear_error(monkeypatch):
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    _flaky(monkeypatch, fail_first=2)
    q = QNN(2, 1, backend="pennylane", dtype=F64, retries=1, backoff_s=0.0)
    with pytest.raises(DeviceExecutionError, match="device 'default.qubit' failed 2 times .*ConnectionError: "
                                                   "backend queue unavailable") as info:
        q(torch.rand(3, 2, dtype=F64))
    assert isinstance(info.value.__cause__, ConnectionError)


def test_retries_also_cover_parameter_shift_in_backward(monkeypatch):
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    ref = QNN(2, 1, dtype=F64)
    x = torch.rand(3, 2, dtype=F64)
    gref = torch.autograd.grad(ref(x).sum(), ref.weights)[0]
    state = _flaky(monkeypatch, fail_first=1, every_call=True)  # every device call fails once first
    q = QNN(2, 1, backend="pennylane", diff_method="parameter-shift", dtype=F64, retries=1, backoff_s=0.0)
    q.load_state_dict(ref.state_dict())
    g = torch.autograd.grad(q(x).sum(), q.weights)[0]
    torch.testing.assert_close(g, gref)
    assert state["calls"] == 2 and state["attempts"] == 4  # forward batch + shifted batch, each retried once


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_noisy_and_shot_reevaluation_of_a_trained_qtha(tmp_path):
    overrides = tiny_overrides(tmp_path, "adapter=qtha", "adapter.n_qubits=2", "adapter.bottleneck=16",
                               "trainer.max_steps=2", "trainer.lr=0.02", "eval.limit=2", "eval.batch_size=2")
    cfg = compose_checked(overrides)
    run = train(cfg, overrides)
    record, path = run.record, run.path
    assert record.status == "ok", record.error
    noisy = ["quantum.backend=pennylane", "quantum.device=default.mixed", "quantum.noise=depolarizing",
             "quantum.p1=0.1", "quantum.p2=0.1", "quantum.readout=[[0.95,0.05],[0.1,0.9]]"]
    shots = ["quantum.backend=pennylane", "quantum.device=default.qubit", "quantum.shots=1000"]
    for args, tag in (([], "exact"), (noisy, "noisy_high"), (shots, "shots_1000")):
        assert qeval.main([str(path), *args, "--tag", tag]) == 0
    losses = {e["tag"]: e["metrics"]["loss"] for e in load_record(path).evaluations}
    assert losses["exact"] == pytest.approx(record.metrics["loss"], rel=1e-5)
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert abs(losses["noisy_high"] - losses["exact"]) > 1e-3, losses  # deterministic: the channels shrink ⟨Z⟩
    assert losses["shots_1000"] != losses["exact"], losses  # samples are seeded by the run's seed (numpy global)
    print("\nlosses:", losses)
    # a record written before the noise fields existed still loads (its config gains them at their defaults)
    old = json.loads(path.read_text())
    for key in ("noise", "p1", "p2", "readout", "retries", "backoff_s", "cache_size"):
        old["config"]["quantum"].pop(key, None)
    path.write_text(json.dumps(old))
    assert load_record(path).config["quantum"]["noise"] == "none"
    assert qeval.eval_config(load_record(path), noisy)[0].quantum.p1 == 0.1
