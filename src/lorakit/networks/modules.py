"""The trainable modules that hook one Linear/Conv2d each (LoRA/LoCon/DyLoRA, LoHa, LoKr, + DoRA).

Like sd-scripts, a module replaces its layer's `forward` instead of replacing the layer, so the
base model keeps its structure and state-dict names. Parameter and buffer names are the file's
suffixes (`lora_down.weight`, `hada_w1_a`, `lokr_w1`, `alpha`, `dora_scale`), so the network's
state dict *is* the file. The delta math lives in `functional`; this file only decides shapes,
initialisation, dropouts and the forward pass.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from . import functional as fn


class NetworkModule(nn.Module):
    """Shared hooking, dropout and DoRA handling. Subclasses provide `delta()` (ΔW·scale)."""

    algo = ""

    def __init__(
        self,
        name: str,
        org: nn.Module,
        dim: int,
        alpha: float | None,
        multiplier: float = 1.0,
        dropout: float | None = None,
        rank_dropout: float | None = None,
        module_dropout: float | None = None,
        dora_wd: bool = False,
        wd_on_out: bool = True,
    ):
        super().__init__()
        self.lora_name = name
        self.dim = dim
        # sd-scripts: alpha 0 or None means alpha = rank (scale 1)
        alpha = float(dim) if alpha is None or alpha == 0 else float(alpha)
        self.register_buffer("alpha", torch.tensor(alpha))
        self.multiplier = multiplier
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self._org = [org]  # a list, so the base layer is not registered as a submodule
        self._org_forward = None
        self.is_conv = isinstance(org, nn.Conv2d)
        self.shape = tuple(org.weight.shape)
        if dora_wd:
            self.dora_scale = nn.Parameter(fn.dora_magnitude(org.weight.detach(), on_output=wd_on_out))
        else:
            self.dora_scale = None

    @property
    def org_module(self) -> nn.Module:
        return self._org[0]

    @property
    def scale(self) -> float:
        return self.alpha.item() / self.dim

    def apply_to(self) -> None:
        if self._org_forward is None:
            self._org_forward = self.org_module.forward
            self.org_module.forward = self.forward

    def restore(self) -> None:
        if self._org_forward is not None:
            self.org_module.forward = self._org_forward
            self._org_forward = None

    def delta(self) -> torch.Tensor:
        """ΔW·scale in the layer's weight shape (no multiplier, no DoRA)."""
        raise NotImplementedError

    def norm_factor(self) -> nn.Parameter:
        """The factor whose scaling scales ΔW by the same ratio (ΔW is linear in it): what
        sd-scripts' scale_weight_norms shrinks."""
        raise NotImplementedError

    def merged_delta(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """What merging at multiplier 1 adds to the base weight, DoRA included."""
        delta = self.delta()
        if self.dora_scale is None:
            return delta
        weight = self.org_module.weight if weight is None else weight
        w = weight.to(delta.dtype)
        return fn.dora_weight(w, delta, self.dora_scale.to(delta.dtype)) - w

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        org = self.org_module
        if self.is_conv:
            return F.conv2d(x, weight, bias, org.stride, org.padding, org.dilation, org.groups)
        return F.linear(x, weight, bias)

    def _skip(self) -> bool:
        return (
            self.training and self.module_dropout is not None and torch.rand(1).item() < self.module_dropout
        )

    def _rank_mask(self, delta: torch.Tensor) -> torch.Tensor:
        """LyCORIS' rank dropout for weight-rebuilding algorithms: drop whole output rows."""
        if not (self.training and self.rank_dropout):
            return delta
        keep = (torch.rand(delta.shape[0], device=delta.device) > self.rank_dropout).to(delta.dtype)
        return delta * keep.reshape(-1, *[1] * (delta.dim() - 1)) / (1.0 - self.rank_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weight-rebuilding forward (LoHa, LoKr, DoRA): y = org(x) + op(x, ΔW)."""
        if self._skip():
            return self._org_forward(x)
        org = self.org_module
        delta = self._rank_mask(self.delta())
        if self.dora_scale is not None:
            weight = org.weight.to(delta.dtype)
            full = fn.dora_weight(weight, delta, self.dora_scale.to(delta.dtype))
            new = weight + self.multiplier * (full - weight)
            bias = org.bias.to(x.dtype) if org.bias is not None else None
            return self._layer_op(x, new.to(x.dtype), bias)
        return self._org_forward(x) + self._layer_op(x, (delta * self.multiplier).to(x.dtype), None)


class LoRAModule(NetworkModule):
    """LoRA (Linear, 1x1 conv), LoCon (kxk conv: down kxk, up 1x1; or Tucker down/mid/up), DyLoRA.

    The forward is x -> down -> up, never a full-weight rebuild, unless DoRA needs the weight.
    `unit` > 0 makes it DyLoRA: each training step uses ranks [0, b+unit) for a random b (multiple
    of unit), with ranks below b frozen, so every prefix of the ranks is a usable LoRA.
    """

    algo = "lora"

    def __init__(self, name, org, dim, alpha, *, use_tucker: bool = False, unit: int = 0, **kwargs):
        super().__init__(name, org, dim, alpha, **kwargs)
        self.unit = unit
        if self.is_conv:
            in_ch, out_ch = org.in_channels, org.out_channels
            kernel, stride, padding = org.kernel_size, org.stride, org.padding
            self.tucker = use_tucker and tuple(kernel) != (1, 1)
            if self.tucker:
                self.lora_down = nn.Conv2d(in_ch, dim, 1, bias=False)
                self.lora_mid = nn.Conv2d(dim, dim, kernel, stride, padding, bias=False)
            else:
                self.lora_down = nn.Conv2d(in_ch, dim, kernel, stride, padding, bias=False)
            self.lora_up = nn.Conv2d(dim, out_ch, 1, bias=False)
        else:
            self.tucker = False
            self.lora_down = nn.Linear(org.in_features, dim, bias=False)
            self.lora_up = nn.Linear(dim, org.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        if self.tucker:
            nn.init.kaiming_uniform_(self.lora_mid.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def norm_factor(self) -> nn.Parameter:
        return self.lora_up.weight

    def delta(self) -> torch.Tensor:
        mid = self.lora_mid.weight if self.tucker else None
        return fn.lora_delta(self.lora_up.weight, self.lora_down.weight, mid, self.shape) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dora_scale is not None:
            return super().forward(x)
        org_out = self._org_forward(x)
        if self._skip():
            return org_out
        dtype = self.lora_down.weight.dtype
        if self.training and self.unit:
            return org_out + (self._dylora(x.to(dtype)) * self.multiplier * self.scale).to(org_out.dtype)
        lx = self.lora_down(x.to(dtype))
        if self.tucker:
            lx = self.lora_mid(lx)
        if self.training and self.dropout:
            lx = F.dropout(lx, p=self.dropout)
        scale = self.scale
        if self.training and self.rank_dropout:
            mask = torch.rand(lx.shape[0], self.dim, device=lx.device) > self.rank_dropout
            # the rank is axis 1 of a conv's activations and the last axis of a Linear's
            shape = (
                (lx.shape[0], self.dim, 1, 1)
                if self.is_conv
                else (lx.shape[0], *[1] * (lx.dim() - 2), self.dim)
            )
            mask = mask.reshape(shape)
            lx = lx * mask.to(lx.dtype)
            scale = scale / (1.0 - self.rank_dropout)
        return org_out + (self.lora_up(lx) * (self.multiplier * scale)).to(org_out.dtype)

    def _dylora(self, x: torch.Tensor) -> torch.Tensor:
        b = random.randrange(0, self.dim, self.unit)
        keep = b + self.unit
        down, up = self.lora_down.weight, self.lora_up.weight
        down = torch.cat([down[:b].detach(), down[b:keep]])
        up = torch.cat([up[:, :b].detach(), up[:, b:keep]], dim=1)
        if self.is_conv:
            org = self.org_module
            h = F.conv2d(x, down, None, org.stride, org.padding)
            return F.conv2d(h, up)
        return F.linear(F.linear(x, down), up)


class LoHaModule(NetworkModule):
    """LoHa: ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) · alpha/r. Init as LyCORIS: w2a = 0 so ΔW starts at 0."""

    algo = "loha"

    def __init__(self, name, org, dim, alpha, *, use_tucker: bool = False, **kwargs):
        super().__init__(name, org, dim, alpha, **kwargs)
        out_dim, in_dim, *kernel = self.shape
        self.tucker = use_tucker and self.is_conv and tuple(kernel) != (1, 1)
        if self.tucker:
            self.hada_t1 = nn.Parameter(torch.empty(dim, dim, *kernel))
            self.hada_w1_a = nn.Parameter(torch.empty(dim, out_dim))
            self.hada_w1_b = nn.Parameter(torch.empty(dim, in_dim))
            self.hada_t2 = nn.Parameter(torch.empty(dim, dim, *kernel))
            self.hada_w2_a = nn.Parameter(torch.empty(dim, out_dim))
            self.hada_w2_b = nn.Parameter(torch.empty(dim, in_dim))
            nn.init.normal_(self.hada_t1, std=0.1)
            nn.init.normal_(self.hada_t2, std=0.1)
        else:
            flat_in = in_dim * math.prod(kernel)
            self.hada_w1_a = nn.Parameter(torch.empty(out_dim, dim))
            self.hada_w1_b = nn.Parameter(torch.empty(dim, flat_in))
            self.hada_w2_a = nn.Parameter(torch.empty(out_dim, dim))
            self.hada_w2_b = nn.Parameter(torch.empty(dim, flat_in))
        nn.init.normal_(self.hada_w1_a, std=0.1)
        nn.init.normal_(self.hada_w1_b, std=1.0)
        nn.init.zeros_(self.hada_w2_a)
        nn.init.normal_(self.hada_w2_b, std=1.0)

    def norm_factor(self) -> nn.Parameter:
        return self.hada_w1_a

    def delta(self) -> torch.Tensor:
        t1 = self.hada_t1 if self.tucker else None
        t2 = self.hada_t2 if self.tucker else None
        d = fn.loha_delta(self.hada_w1_a, self.hada_w1_b, self.hada_w2_a, self.hada_w2_b, t1, t2, self.shape)
        return d * self.scale


class LoKrModule(NetworkModule):
    """LoKr: ΔW = kron(W1, W2). Shapes from `factorization(dim, factor)` as LyCORIS does: W1 is
    full unless `decompose_both`; W2 is a rank-`dim` pair unless the rank is so large (≥ half its
    side) that the full matrix is smaller, and then both are full and alpha is ignored (scale 1)."""

    algo = "lokr"

    def __init__(
        self,
        name,
        org,
        dim,
        alpha,
        *,
        factor: int = -1,
        decompose_both: bool = False,
        use_tucker: bool = False,
        **kwargs,
    ):
        super().__init__(name, org, dim, alpha, **kwargs)
        out_dim, in_dim, *kernel = self.shape
        out_l, out_k = fn.factorization(out_dim, factor)
        in_m, in_n = fn.factorization(in_dim, factor)
        # W1: [out_l, in_m]; W2: [out_k, in_n (x kernel)]
        if decompose_both and dim < max(out_l, in_m) / 2:
            self.lokr_w1_a = nn.Parameter(torch.empty(out_l, dim))
            self.lokr_w1_b = nn.Parameter(torch.empty(dim, in_m))
            nn.init.kaiming_uniform_(self.lokr_w1_a, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.lokr_w1_b, a=math.sqrt(5))
            self.w1_full = False
        else:
            self.lokr_w1 = nn.Parameter(torch.empty(out_l, in_m))
            nn.init.kaiming_uniform_(self.lokr_w1, a=math.sqrt(5))
            self.w1_full = True
        self.tucker = False
        if dim >= max(out_k, in_n) / 2:
            self.lokr_w2 = nn.Parameter(torch.zeros(out_k, in_n, *kernel))
            self.w2_full = True
        else:
            self.w2_full = False
            self.tucker = use_tucker and self.is_conv and tuple(kernel) != (1, 1)
            if self.tucker:
                self.lokr_t2 = nn.Parameter(torch.empty(dim, dim, *kernel))
                self.lokr_w2_a = nn.Parameter(torch.empty(dim, out_k))
                self.lokr_w2_b = nn.Parameter(torch.zeros(dim, in_n))
                nn.init.kaiming_uniform_(self.lokr_t2, a=math.sqrt(5))
            else:
                self.lokr_w2_a = nn.Parameter(torch.empty(out_k, dim))
                self.lokr_w2_b = nn.Parameter(torch.zeros(dim, in_n * math.prod(kernel)))
            nn.init.kaiming_uniform_(self.lokr_w2_a, a=math.sqrt(5))
        if self.w1_full and self.w2_full:
            self.alpha.fill_(float(dim))  # no rank: the scale is 1 in every client

    @property
    def scale(self) -> float:
        return 1.0 if (self.w1_full and self.w2_full) else super().scale

    def norm_factor(self) -> nn.Parameter:
        return self.lokr_w1 if self.w1_full else self.lokr_w1_a

    def delta(self) -> torch.Tensor:
        d = fn.lokr_delta(
            w1=self.lokr_w1 if self.w1_full else None,
            w1a=None if self.w1_full else self.lokr_w1_a,
            w1b=None if self.w1_full else self.lokr_w1_b,
            w2=self.lokr_w2 if self.w2_full else None,
            w2a=None if self.w2_full else self.lokr_w2_a,
            w2b=None if self.w2_full else self.lokr_w2_b,
            t2=self.lokr_t2 if self.tucker else None,
            shape=self.shape,
        )
        return d * self.scale


# the factor each algorithm initialises at zero: LoRA+ gives it the higher learning rate
PLUS_PARAMS = ("lora_up.weight", "hada_w2_a", "lokr_w2", "lokr_w2_b")

MODULE_CLASSES = {"lora": LoRAModule, "loha": LoHaModule, "lokr": LoKrModule}
