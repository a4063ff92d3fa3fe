"""The GPU path, which a CPU-only CI never takes: skipped without CUDA; run on a GPU with
``pytest tests/test_cuda.py``. Each check compares the CUDA result with the same computation on the CPU,
so a tensor left on the wrong device, or a kernel that only the CPU path exercises, shows up here."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import randomised_tiny, tiny_overrides
from qtha import evaluation
from qtha.compose import compose_checked
from qtha.quantum import QNN
from qtha.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the GPU path)")

ADAPTERS = [["adapter=lora"], ["adapter=dora"], ["adapter=quanta"], ["adapter=qtha"],
            ["adapter=qtha", "adapter.variant=mlp_qnn"], ["adapter=qtha_silu"]]


@pytest.mark.parametrize("overrides", ADAPTERS, ids=lambda o: ",".join(o))
def test_adapter_forward_and_gradients_on_cuda_match_the_cpu(overrides: list[str]) -> None:
    cpu = randomised_tiny(*overrides)[0].double()
    gpu = copy.deepcopy(cpu).cuda()
    ids = torch.randint(0, cpu.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    out_c = cpu(input_ids=ids, labels=ids)
    out_g = gpu(input_ids=ids.cuda(), labels=ids.cuda())
    torch.testing.assert_close(out_g.logits.cpu(), out_c.logits, rtol=1e-6, atol=1e-6)
    out_c.loss.backward()
    out_g.loss.backward()
    grads_c = {k: p.grad for k, p in cpu.named_parameters() if p.requires_grad}
    grads_g = {k: p.grad.cpu() for k, p in gpu.named_parameters() if p.requires_grad}
    assert grads_c.keys() == grads_g.keys() and grads_c
    for k in grads_c:
        torch.testing.assert_close(grads_g[k], grads_c[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("n_qubits,n_layers", [(2, 1), (4, 4), (6, 2)])
def test_qnn_kernel_on_cuda_matches_the_cpu_in_float64(n_qubits: int, n_layers: int) -> None:
    torch.manual_seed(3)
    cpu = QNN(n_qubits, n_layers, dtype=torch.float64)
    gpu = copy.deepcopy(cpu).cuda()
    u = torch.randn(64, n_qubits, dtype=torch.float64, requires_grad=True)
    u_g = u.detach().cuda().requires_grad_(True)
    out_c, out_g = cpu(u), gpu(u_g)
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=0, atol=1e-10)
    out_c.square().sum().backward()
    out_g.square().sum().backward()
    torch.testing.assert_close(u_g.grad.cpu(), u.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(gpu.weights.grad.cpu(), cpu.weights.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("adapter", ["lora", "qtha"])
def test_a_gpu_run_trains_and_generates_on_the_gpu(tmp_path, monkeypatch, adapter: str) -> None:
    """Lightning hands a fitted model back on the CPU; generation must still run on the GPU, in bf16."""
    seen = []
    real = evaluation.generate

    def spy(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.device(kwargs["device"]).type)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(evaluation, "generate", spy)
    cfg = compose_checked(tiny_overrides(tmp_path, "trainer=gpu", f"adapter={adapter}", "trainer.max_steps=4",
                                         "trainer.batch_size=2", "trainer.val_check_interval=2"))
    run = train(cfg, [f"adapter={adapter}", "trainer=gpu"])
    record = run.record
    assert record.status == "ok", record.error
    assert record.config["trainer"]["accelerator"] == "gpu" and record.precision == "bf16-mixed"
    assert record.environment["cuda"] and record.environment["gpu"]
    assert seen == ["cuda"] and record.generation["rows"] == 4
    assert record.metrics["loss"] < record.metrics["init_loss"] + 1e-3
