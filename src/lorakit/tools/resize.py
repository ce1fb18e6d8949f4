"""`lorakit resize`: a LoRA at a lower rank, module by module, by truncated SVD.

Each module's ΔW/scale is factorised and cut to the new rank; alpha becomes scale x new rank so
alpha/rank, the strength every client applies, is unchanged. A plain LoRA's SVD is taken from
its factors (QR of each, SVD of an r x r core) rather than from the full matrix. Any algorithm
is accepted (LoHa, LoKr and Tucker LoCon by their full delta), and comes out as LoRA/LoCon;
a DoRA module keeps its magnitude vector, so only its direction is approximated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import LorakitError
from ..networks.file import resolve_precision, save_network_file
from ..networks.naming import LayerIndex, full_size_index
from ..networks.reading import ModuleWeights, load_network
from ..utils.files import refuse_input
from .deltas import layer_shape, on_device, require_resolved
from .lorafile import Factors, kohya_tensors, network_keys, stored_dtype
from .svd import (
    check_dynamic,
    choose_rank,
    factor_shapes,
    resolve_device,
    retained,
    svd,
    svd_of_product,
    truncate,
)


@dataclass
class ModuleResize:
    name: str
    old_rank: int | None  # None: no single rank (a LoKr with full factors)
    new_rank: int
    alpha: float
    fro_retained: float  # the fraction of ΔW's Frobenius norm the new rank keeps
    sum_retained: float  # the fraction of the sum of singular values
    conv: bool


@dataclass
class ResizeReport:
    output: Path
    modules: list[ModuleResize] = field(default_factory=list)

    def format(self, per_module: bool = True) -> str:
        lines = []
        if per_module:
            width = max((len(m.name) for m in self.modules), default=10)
            lines.append(f"{'module':<{width}}  {'rank':>11}  {'alpha':>8}  {'Frobenius kept':>14}")
            for m in self.modules:
                old = "?" if m.old_rank is None else str(m.old_rank)
                lines.append(
                    f"{m.name:<{width}}  {old:>5} -> {m.new_rank:<3}  {m.alpha:>8.4g}  {m.fro_retained:>13.1%}"
                )
        fro = [m.fro_retained for m in self.modules]
        if fro:
            worst = min(self.modules, key=lambda m: m.fro_retained)
            mean = sum(fro) / len(fro)
            lines.append(
                f"{len(fro)} modules; Frobenius norm kept: mean {mean:.1%}, lowest {worst.fro_retained:.1%} "
                f"({worst.name}); ranks {min(m.new_rank for m in self.modules)}-{max(m.new_rank for m in self.modules)}"
            )
        return "\n".join(lines)


def resize_lora(
    path: str | Path,
    out: str | Path,
    new_rank: int,
    *,
    new_conv_rank: int | None = None,
    dynamic: str | None = None,
    dynamic_param: float | None = None,
    precision: str | None = None,
    device: str | None = "auto",
    model=None,
    progress: bool = False,
) -> ResizeReport:
    """Write `path` resized to `out`. new_rank caps every Linear/1x1 module (kxk convs:
    new_conv_rank, default new_rank); `dynamic` picks each module's rank below that cap:
    sv_ratio (keep singular values > largest / P), sv_fro (keep fraction P of the Frobenius
    norm), sv_cumulative (keep fraction P of the sum of singular values)."""
    refuse_input(out, [path])
    out = Path(out)
    if new_rank is None or new_rank < 1 or (new_conv_rank is not None and new_conv_rank < 1):
        raise LorakitError("--new-rank (and --new-conv-rank) must be at least 1.")
    check_dynamic(dynamic, dynamic_param)
    conv_rank = new_conv_rank or new_rank
    dev = resolve_device(device)
    net = load_network(path, model=model)
    require_resolved(net)
    index = (
        LayerIndex.for_model(model)
        if model is not None
        else (full_size_index(net.family.name) if net.family is not None else None)
    )
    report = ResizeReport(out)
    factors: dict[str, Factors] = {}
    for name, module in tqdm(net.modules.items(), desc="resizing", unit="module", disable=not progress):
        layer = net.layers.get(name) or (index.get(name) if index is not None else None)
        shape = layer_shape(name, module, layer, net.source)
        kxk = len(shape) == 4 and tuple(shape[2:]) != (1, 1)
        scale = module.scale or 1.0  # alpha 0 stores a zero delta: any scale keeps it zero
        u, s, vh = _svd(on_device(module, dev), shape, scale)
        rank = choose_rank(s, conv_rank if kxk else new_rank, dynamic, dynamic_param)
        up, down = truncate(u, s, vh, rank)
        up, down = factor_shapes(up.cpu(), down.cpu(), shape)
        extra = {"dora_scale": module.dora_scale} if module.dora_scale is not None else {}
        factors[name] = Factors(up, down, scale * rank, extra)
        kept = retained(s, rank)
        report.modules.append(ModuleResize(name, module.rank, rank, scale * rank, kept.fro, kept.sum, kxk))

    meta = dict(net.metadata)
    for key in [k for k in meta if k.startswith("sshs_")]:
        del meta[key]
    old = sorted({m.old_rank for m in report.modules if m.old_rank is not None})
    old_text = "/".join(map(str, old)) or "?"
    comment = meta.get("ss_training_comment", "")
    if dynamic:
        note = f"dynamic resize with {dynamic}: {dynamic_param} (max rank {new_rank}) from {old_text}"
    else:
        conv = "" if conv_rank == new_rank else f" (conv: {conv_rank})"
        note = f"dimension is resized from {old_text} to {new_rank}{conv}"
    meta["ss_training_comment"] = f"{note}; {comment}" if comment else note
    keys = network_keys(factors)
    if dynamic:
        keys["ss_network_dim"] = keys["ss_network_alpha"] = "Dynamic"
    meta.update(keys)
    meta["lorakit_resize"] = json.dumps(
        {"new_rank": new_rank, "new_conv_rank": conv_rank, "dynamic": dynamic, "dynamic_param": dynamic_param}
    )
    dtype = resolve_precision(precision) or stored_dtype(net)
    save_network_file(out, kohya_tensors(factors), meta, dtype)
    return report


def _svd(module: ModuleWeights, shape, scale: float):
    """SVD of ΔW/scale, the matrix the stored factors multiply to."""
    if module.algo == "lora" and "lora_mid.weight" not in module.tensors:  # DoRA too: its direction part
        up = module.tensors["lora_up.weight"]
        down = module.tensors["lora_down.weight"]
        return svd_of_product(up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1))
    return svd(module.delta(shape).reshape(shape[0], -1) / scale)


__all__ = ["ModuleResize", "ResizeReport", "resize_lora"]
