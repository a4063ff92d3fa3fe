"""The contract every adapter layer fulfils (SPEC §1).

An adapter *wraps* a frozen ``nn.Linear`` (it does not subclass it, as in peft), so the
base weights stay where the checkpoint put them and the adapter only adds a branch:

    y = base(x) + scaling · Δ(dropout(x))

A new method is one module: its config dataclass (a subclass of :class:`AdapterConfig`), an
:class:`AdapterLayer` subclass that builds its parameters in ``__init__`` (with
:meth:`AdapterLayer.factory_kwargs`) and implements ``delta``, ``num_params``, ``check_config`` if
it has fields of its own and, if ``mergeable``, ``delta_weight``; and one
:func:`qtha.adapters.registry.register_adapter` call. Everything else — dtype handling, merge
bookkeeping, freezing, the shared config checks — lives here and in the registry once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor, nn


@dataclass
class AdapterConfig:
    """Fields every adapter shares; a method's schema subclasses it beside its layer.

    ``name`` selects the method in :data:`qtha.adapters.registry.ADAPTERS`. ``alpha=null`` means
    2·rank: scaling alpha/rank = 2 at every rank (LLaMA-Factory's default, the authors' runs, SPEC
    §1.1), so a rank sweep does not also sweep the output scale.
    """

    name: str = "none"
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    rank: int = 4
    alpha: Optional[float] = None
    dropout: float = 0.0


def alpha_of(cfg: AdapterConfig) -> float:
    """``cfg.alpha``, or 2·rank when it is null."""
    return float(cfg.alpha) if cfg.alpha is not None else 2.0 * cfg.rank


class AdapterMergeError(RuntimeError):
    """Merge/unmerge called in the wrong state, on a non-mergeable adapter, or unsafely."""


class AdapterLayer(nn.Module, ABC):
    """A trainable branch added to a frozen linear layer.

    Adapter parameters are created in ``dtype`` (float32 by default) whatever the base
    dtype: a bf16 parameter cannot hold a small optimiser update (8-bit mantissa rounds
    ``w + lr·g`` back to ``w``), and the quantum branches must never run in bf16. Inputs
    are cast to the adapter dtype for the branch and the result cast back, so a bf16 LM
    with float32 adapters runs without autocast.
    """

    mergeable: bool  # Δ is linear in x (merge works); a class default, set per layer where the config decides (QTHA)
    uses_quantum: ClassVar[bool] = False  # True: the constructor takes ``quantum=QuantumConfig``
    # True when every op of ``delta`` that reads x is one autocast runs in its lower precision (a matmul): under
    # autocast x then enters the branch as it is, since casting it up would only be cast back down — two copies
    # of the whole activation forward and two backward, about a third of a LoRA module's time on SmolLM2.
    autocast_input: ClassVar[bool] = False

    def __init__(self, base: nn.Linear, cfg: AdapterConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps nn.Linear, got {type(base).__name__}")
        if cfg.rank <= 0:
            raise ValueError(f"adapter rank must be a positive integer, got {cfg.rank}")
        self.base = base.requires_grad_(False)
        self.rank = cfg.rank
        self.scaling = alpha_of(cfg) / cfg.rank
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.merged = False
        self._dtype = dtype

    # ------------------------------------------------------------------ subclass API
    @abstractmethod
    def delta(self, x: Tensor) -> Tensor:
        """Unscaled Δ(x) for ``x`` already in the adapter dtype: (..., d_in) -> (..., d_out)."""

    @classmethod
    @abstractmethod
    def num_params(cls, cfg: AdapterConfig, d_in: int, d_out: int) -> int:
        """Exact trainable count from config and shape alone (no tensors, so meta models work)."""

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The method's own config checks (one-line :class:`~qtha.errors.ConfigError`); the shared fields
        are checked by :func:`qtha.adapters.registry.check_adapter` before this runs."""

    @classmethod
    def is_mergeable(cls, cfg: AdapterConfig) -> bool:
        """Whether a layer built from ``cfg`` will merge, known before any model is loaded (``qtha.export`` refuses
        a merged export up front): :attr:`mergeable`, unless the method's config decides (QTHA's linear variants)."""
        return cls.mergeable

    def delta_weight(self) -> Tensor:
        """Scaled update as a (d_out, d_in) matrix in the adapter dtype; mergeable adapters only."""
        raise AdapterMergeError(self._not_mergeable_message())

    def adapt_to_state(self, state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """A checkpoint's tensors for this layer (keys relative to it), as this layer loads them: called before
        every load (:func:`qtha.adapters.load_adapter_state_dict`, ``load_state_dict``), so a layer whose
        checkpoint format changed can read the earlier one (renaming keys, or switching itself to the format
        the file holds). Default: ``state`` as it is."""
        return state

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        mine = {k[len(prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
        state_dict.update({prefix + k: v for k, v in self.adapt_to_state(mine).items()})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def factory_kwargs(self) -> dict[str, Any]:
        """Device of the base weight (``meta`` included) and the adapter dtype, for new tensors."""
        return {"device": self.base.weight.device, "dtype": self._dtype}

    # ------------------------------------------------------------------ shape
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged:
            return y
        d = self.delta(self.dropout(self.branch_input(x)))
        return y + (self.scaling * d).to(y.dtype)

    def branch_input(self, x: Tensor) -> Tensor:
        """x in the adapter dtype, or as it is where the cast would be undone (:attr:`autocast_input`, no active
        dropout: a bf16 dropout rounds its scale): the branch then computes with the same values, bit for bit."""
        dev = x.device.type
        if (self.autocast_input and torch.is_autocast_enabled(dev) and x.dtype == torch.get_autocast_dtype(dev)
                and (isinstance(self.dropout, nn.Identity) or not self.training)):
            return x
        return x.to(self._compute_dtype())

    def _compute_dtype(self) -> torch.dtype:
        """The adapter's current parameter dtype (follows ``.to()`` / ``.double()`` calls)."""
        for name, p in self.named_parameters():
            if not name.startswith("base."):
                return p.dtype
        return self._dtype

    # ------------------------------------------------------------------ merge
    @torch.no_grad()
    def merge(self, safe: bool = True) -> None:
        """Add ``delta_weight()`` into the base weight; an explicit call only, never a mode switch.

        ``safe`` checks the merged weight is finite before writing it, so a diverged adapter
        cannot silently corrupt the LM.
        """
        self.check_mergeable()
        w = self.base.weight
        merged = w + self.delta_weight().to(w.dtype)
        if safe and not torch.isfinite(merged).all():
            raise AdapterMergeError(f"{type(self).__name__}: merged weight has NaN/inf; base left unchanged")
        w.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``delta_weight()`` again (exact in float32 up to rounding; lossy in bf16)."""
        if not self.merged:
            raise AdapterMergeError(f"{type(self).__name__} is not merged; nothing to unmerge")
        w = self.base.weight
        w.sub_(self.delta_weight().to(w.dtype))
        self.merged = False

    def check_mergeable(self) -> None:
        """Raise unless ``merge()`` would succeed state-wise (lets callers check every layer first)."""
        if not self.mergeable:
            raise AdapterMergeError(self._not_mergeable_message())
        if self.merged:
            raise AdapterMergeError(f"{type(self).__name__} is already merged; call unmerge() first")

    def _not_mergeable_message(self) -> str:
        return (
            f"{type(self).__name__} cannot be merged: its Δ(x) is not linear in x, "
            "so it has no equivalent weight update"
        )

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"

    # ------------------------------------------------------------------ generation
    def base_used_as_module_only(self) -> bool:
        """Whether the forward reaches the frozen base only by calling ``self.base(x)``, never reading its
        weight: then generation may hand the base a bf16 copy of its weight under a bf16 autocast (the values
        autocast casts it to anyway, :func:`qtha.generation.autocast_weights`). A layer that computes with
        ``base.weight`` itself (DoRA's norms) must say False."""
        return True
