"""DoRA (SPEC §1.2): weight-decomposed LoRA, peft's ``use_dora=True`` as the oracle.

The adapted weight is W = m ⊙ (W0 + s·BA) / ‖W0 + s·BA‖, the norm taken per output row of
the (d_out, d_in) weight (the paper's "column norm" in its d_in × d_out convention), with
``m = lora_magnitude_vector.weight`` initialised to that norm, i.e. ‖W0‖ since B = 0.
As in peft (and DoRA §4.3) the norm is **detached**: it follows BA but passes no gradient.

Like peft, the layer returns the *extra* output on top of the frozen base:

    y = W0 x + b + (m/‖·‖ − 1) ⊙ W0 x' + (m/‖·‖) ⊙ s·B A x'

with x' = dropout(x). When dropout is inactive (p = 0 or eval mode) peft reuses the base
output for W0 x (minus the bias) instead of a second matmul; :meth:`DoRALayer.forward` does
the same, and falls back to recomputing W0·dropout(x) in the adapter dtype otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qtha.adapters.base import AdapterConfig, AdapterMergeError
from qtha.adapters.lora import LoRALayer
from qtha.adapters.registry import register_adapter


@dataclass
class DoRAConfig(AdapterConfig):
    """SPEC §1.2: weight-decomposed LoRA, magnitude m initialised to ‖W0‖_col."""

    name: str = "dora"


class _Magnitude(nn.Module):
    """Holds m as ``.weight`` so checkpoint keys read like peft's
    (``lora_magnitude_vector.weight`` ↔ peft's ``lora_magnitude_vector.default.weight``)."""

    def __init__(self, d_out: int, **kw) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, **kw))


class DoRALayer(LoRALayer):
    """LoRA's ``lora_A`` / ``lora_B`` plus a trainable per-output-row magnitude.

    Params: r·(d_in + d_out) + d_out. Mergeable: ``delta_weight()`` is
    m ⊙ (W0 + sBA)/‖W0 + sBA‖ − W0. Because that depends on W0, :meth:`merge` keeps a copy of
    W0 and :meth:`unmerge` writes it back (peft instead keeps the norm and divides, which is
    inexact for small m and impossible for m = 0).
    """

    def __init__(self, base: nn.Linear, cfg: AdapterConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__(base, cfg, dtype=dtype)  # lora_A / lora_B with peft's RNG draws
        self.lora_magnitude_vector = _Magnitude(self.out_features, **self.factory_kwargs())
        # W0 while merged (not saved: loading into a merged model is refused anyway).
        self.register_buffer("_merged_w0", None, persistent=False)
        self._init_magnitude()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """LoRA's init, then m = ‖W0 + s·BA‖ = ‖W0‖ (B = 0): the identity at init.
        (During ``LoRALayer.__init__`` the magnitude does not exist yet; ``__init__`` sets it.)"""
        super().reset_parameters()
        if hasattr(self, "lora_magnitude_vector"):
            self._init_magnitude()

    @torch.no_grad()
    def _init_magnitude(self) -> None:
        self.lora_magnitude_vector.weight.copy_(self._weight_norm(self._base_weight()))

    # ------------------------------------------------------------------ pieces
    @property
    def magnitude(self) -> Tensor:
        return self.lora_magnitude_vector.weight

    def _base_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        return self.base.weight.to(dtype or self.magnitude.dtype)

    def _lora_weight(self) -> Tensor:
        return self.lora_B.weight @ self.lora_A.weight

    def _weight_norm(self, w0: Tensor) -> Tensor:
        """‖W0 + s·BA‖ per output row, detached (peft: the norm is a constant for backprop)."""
        return torch.linalg.norm(w0 + self.scaling * self._lora_weight().detach(), dim=1).detach()

    def _dora_term(self, x: Tensor, base_out: Tensor | None) -> Tensor:
        """The scaled extra output s·Δ(x), peft's ``result_dora``; ``base_out`` = W0 x (no bias)
        or ``None`` to compute it here from ``x``."""
        w0 = self._base_weight(x.dtype)
        scale = self.magnitude / self._weight_norm(w0)
        if base_out is None:
            base_out = F.linear(x, w0)
        return (scale - 1) * base_out + scale * self.lora_B(self.lora_A(x)) * self.scaling

    # ------------------------------------------------------------------ contract
    def forward(self, x: Tensor) -> Tensor:
        """Base output plus the DoRA term; reuses the base output for W0 x when dropout is
        inactive (peft's behaviour), otherwise W0 is applied to dropout(x) in the adapter dtype."""
        y = self.base(x)
        if self.merged:
            return y
        xa = x.to(self._compute_dtype())
        if isinstance(self.dropout, nn.Identity) or not self.training:
            base_out = y if self.base.bias is None else y - self.base.bias
            term = self._dora_term(xa, base_out.to(xa.dtype))
        else:
            term = self._dora_term(self.dropout(xa), None)
        return y + term.to(y.dtype)

    def delta(self, x: Tensor) -> Tensor:
        """Unscaled Δ(x), so that base(x) + scaling·Δ(x) is the layer's output (dropout aside)."""
        return self._dora_term(x, None) / self.scaling

    def delta_weight(self) -> Tensor:
        """The merged update as a (d_out, d_in) matrix in the adapter dtype.

        Unmerged: m ⊙ (W0 + sBA)/‖W0 + sBA‖ − W0 from the current base weight.
        Merged: W_merged − W0, with the W0 kept by :meth:`merge`.
        """
        if self.merged:
            return self._base_weight() - self._merged_w0.to(self.magnitude.dtype)
        w = self._base_weight()
        adapted = w + self.scaling * self._lora_weight()
        norm = torch.linalg.norm(adapted, dim=1).detach()
        return (self.magnitude / norm).unsqueeze(1) * adapted - w

    @torch.no_grad()
    def merge(self, safe: bool = True) -> None:
        """As the base class, keeping a copy of W0 (base dtype, same device) while merged.

        The merged weight depends on W0 non-linearly; recovering W0 from it (peft divides by
        m/‖·‖) loses digits wherever m is small and cannot work where m = 0, so the copy makes
        unmerge exact, bit for bit, at the cost of one weight's memory until then.
        """
        w0 = self.base.weight.detach().clone()
        super().merge(safe=safe)
        self._merged_w0 = w0

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the W0 kept by :meth:`merge` exactly."""
        if not self.merged:
            raise AdapterMergeError(f"{type(self).__name__} is not merged; nothing to unmerge")
        self.base.weight.copy_(self._merged_w0)
        self._merged_w0 = None
        self.merged = False

    @classmethod
    def num_params(cls, cfg: AdapterConfig, d_in: int, d_out: int) -> int:
        return super().num_params(cfg, d_in, d_out) + d_out

    def base_used_as_module_only(self) -> bool:
        """False: the forward computes ‖W0 + s·BA‖ and W0·x from the fp32 W0 itself."""
        return False


register_adapter("dora", DoRAConfig, DoRALayer)
