"""`lorakit merge` without --model: several LoRAs combined into one, three ways.

The weights mean different things in each (see `merge_loras`): sd-scripts' same-rank merge adds
factors, so a weight acts squared and files mix; --concat and the SVD merge add deltas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..models.families import Family
from ..networks.errors import NetworkError
from ..networks.file import resolve_precision, save_network_file
from ..networks.naming import LayerIndex, full_size_index
from ..networks.reading import NetworkFile, load_network
from ..utils.files import refuse_input
from .deltas import (
    is_plain_lora,
    layer_shape,
    on_device,
    require_no_dora,
    require_plain_lora,
    require_resolved,
)
from .lorafile import Factors, common_metadata, kohya_tensors, network_keys, stamp, stored_dtype
from .specs import RECIPE_KEY, as_spec, check_exists, module_strengths, recipe_entry
from .svd import factor_shapes, resolve_device, retained, svd, svd_of_product, truncate


@dataclass
class LoraMerge:
    """What `merge_loras` did; `retained` (SVD mode) is each module's kept Frobenius fraction."""

    output: Path
    mode: str
    modules: dict[str, Factors] = field(default_factory=dict)
    retained: dict[str, float] = field(default_factory=dict)


def _family(nets: Sequence[NetworkFile], model) -> Family | None:
    if model is not None:
        return model.family
    families = {net.family for net in nets if net.family is not None}
    if len(families) > 1:
        found = ", ".join(f"{Path(n.source).name}: {n.family.label}" for n in nets if n.family is not None)
        raise NetworkError(f"these LoRAs are for different base models ({found}); they cannot be merged.")
    return next(iter(families), None)


def merge_loras(
    loras: Sequence,
    out: str | Path,
    *,
    new_rank: int | None = None,
    new_conv_rank: int | None = None,
    concat: bool = False,
    same_to_strength: bool = False,
    clamp_quantile: float | None = None,
    precision: str | None = None,
    device: str | None = "auto",
    model=None,
    progress: bool = False,
) -> LoraMerge:
    """Combine LoRAs into one file.

    - default (sd-scripts' merge_lora.py): factors of equal rank are added, each multiplied by
      √(alpha/alpha_first)·weight (the up factor by its absolute value). Both factors carry the
      weight, so a LoRA alone comes out at weight² of its strength, and two LoRAs also produce
      cross terms (A's up times B's down). `same_to_strength` passes √weight instead
      (SuperMerger's "same to strength"), so a lone LoRA keeps its strength.
    - concat: factors stacked (rank = sum of ranks), alpha = rank: the result is exactly
      Σ weight·ΔW. sd-scripts' --concat keeps the first alpha, which weakens the result.
    - new_rank: Σ weight·ΔW of any algorithm, re-factorised by SVD to new_rank (kxk convs to
      new_conv_rank, default new_rank), alpha = rank: exact up to what that rank can hold. A sum
      of plain LoRAs whose total rank is lower keeps that rank (the rest would be zeros).
    model: a loaded model to resolve names and shapes against (else the family's full-size layout).
    """
    out = Path(out)
    specs = [as_spec(item) for item in loras]
    if not specs:
        raise LorakitError("nothing to merge: give at least one --lora FILE[:WEIGHT].")
    check_exists(specs)
    refuse_input(out, [spec.path for spec in specs])
    if concat and new_rank is not None:
        raise LorakitError("--concat and --new-rank are two different ways to merge; choose one.")
    if new_conv_rank is not None and new_rank is None:
        raise LorakitError("--new-conv-rank goes with --new-rank (the SVD merge); add --new-rank R.")
    if same_to_strength and (concat or new_rank is not None):
        raise LorakitError(
            "--same-to-strength changes only the same-rank merge; --concat and --new-rank already apply each "
            "weight once."
        )
    for rank in (new_rank, new_conv_rank):
        if rank is not None and rank < 1:
            raise LorakitError(f"--new-rank/--new-conv-rank {rank}: a rank is at least 1.")
    dev = resolve_device(device)
    nets = [load_network(spec.path, model=model) for spec in specs]
    for net in nets:
        require_resolved(net)
    family = _family(nets, model)
    index = (
        LayerIndex.for_model(model)
        if model is not None
        else (full_size_index(family.name) if family else None)
    )
    weights = [module_strengths(net, spec, family, index) for net, spec in zip(nets, specs)]

    if new_rank is not None:
        mode = "svd"
        report = LoraMerge(out, mode)
        _svd_merge(
            nets, weights, index, new_rank, new_conv_rank or new_rank, clamp_quantile, dev, report, progress
        )
    elif concat:
        mode = "concat"
        report = LoraMerge(out, mode, _concat(nets, weights))
    else:
        mode = "same-to-strength" if same_to_strength else "weighted"
        report = LoraMerge(out, mode, _weighted(nets, weights, same_to_strength))
    if not report.modules:
        raise NetworkError("every module has weight 0 (weights and block weights): nothing to write.")

    labels = [spec.label() for spec in specs]
    meta = common_metadata(nets)
    meta.update(network_keys(report.modules))
    meta["ss_training_comment"] = f"merged by lorakit ({mode}) from {', '.join(labels)}"
    stamp(meta, out.stem, ", ".join(labels))
    recipe = {"mode": mode, "loras": [recipe_entry(spec, net) for spec, net in zip(specs, nets)]}
    if new_rank is not None:
        recipe.update(
            new_rank=new_rank, new_conv_rank=new_conv_rank or new_rank, clamp_quantile=clamp_quantile
        )
    meta[RECIPE_KEY] = json.dumps(recipe)
    dtype = resolve_precision(precision) or stored_dtype(nets[0])
    save_network_file(out, kohya_tensors(report.modules), meta, dtype)
    return report


_DORA_INSTEAD = "Merge it into a checkpoint instead (--model)."
_UNEQUAL = "Use --concat (exact, rank = sum of ranks) or --new-rank R (SVD), which accept any ranks."


def _plain_loras(nets, strengths, merge: str):
    """(net, module name, module, strength) of every module that takes part (strength not 0), each
    checked to be a plain LoRA: the factor merges add up and down matrices."""
    for net, weights in zip(nets, strengths):
        for name, module in net.modules.items():
            weight = weights[name]
            if weight == 0:
                continue
            require_no_dora(module, name, net.source, _DORA_INSTEAD)
            require_plain_lora(module, name, net.source, merge, "Use --new-rank R (SVD merge) for it.")
            yield net, name, module, weight


def _weighted(nets, strengths, same_to_strength: bool) -> dict[str, Factors]:
    merged: dict[str, Factors] = {}
    base_alpha: dict[str, float] = {}
    for net, name, module, weight in _plain_loras(nets, strengths, "the same-rank merge"):
        up, down = module.tensors["lora_up.weight"].float(), module.tensors["lora_down.weight"].float()
        alpha = module.alpha if module.alpha is not None else float(down.shape[0])
        base = base_alpha.setdefault(name, alpha)
        if alpha <= 0 or base <= 0:
            raise NetworkError(
                f"{net.source}: module {name} has alpha {alpha}; the same-rank merge needs alpha > 0."
            )
        ratio = math.copysign(math.sqrt(abs(weight)), weight) if same_to_strength else weight
        scale = math.sqrt(alpha / base) * ratio
        up, down = up * abs(scale), down * scale
        if name not in merged:
            merged[name] = Factors(up, down, base)
            continue
        if merged[name].down.shape != down.shape or merged[name].up.shape != up.shape:
            raise NetworkError(
                f"{net.source}: module {name} has rank {down.shape[0]} here and {merged[name].rank} in an "
                f"earlier file; the same-rank merge adds factors of equal shape. {_UNEQUAL}"
            )
        merged[name].up += up
        merged[name].down += down
    return merged


def _concat(nets, strengths) -> dict[str, Factors]:
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for _, name, module, weight in _plain_loras(nets, strengths, "--concat"):
        factor = weight * module.scale
        root = math.sqrt(abs(factor))
        up = module.tensors["lora_up.weight"].float() * root
        down = module.tensors["lora_down.weight"].float() * math.copysign(root, factor)
        parts.setdefault(name, []).append((up, down))
    out = {}
    for name, pairs in parts.items():
        try:
            up = torch.cat([p[0] for p in pairs], dim=1)
            down = torch.cat([p[1] for p in pairs], dim=0)
        except RuntimeError as e:
            raise NetworkError(f"module {name}: the files' factors do not fit together ({e}).") from e
        out[name] = Factors(up, down, float(down.shape[0]))
    return out


def _svd_merge(nets, strengths, index, rank, conv_rank, clamp_quantile, device, report, progress) -> None:
    """Per module: Σ weight·ΔW, then its truncated SVD. When every contribution is a plain LoRA
    the sum is itself a product, [w₁s₁U₁ … ] @ [D₁; …], whose SVD comes from the stacked factors
    (`svd_of_product`) without forming or decomposing the full matrix; otherwise the full delta."""
    names = list(dict.fromkeys(name for net in nets for name in net.modules))
    for name in tqdm(names, desc="SVD merge", unit="module", disable=not progress):
        parts, shape = [], None
        for net, weights in zip(nets, strengths):
            module = net.modules.get(name)
            if module is None or weights[name] == 0:
                continue
            require_no_dora(module, name, net.source, _DORA_INSTEAD)
            layer = net.layers.get(name) or (index.get(name) if index is not None else None)
            this_shape = layer_shape(name, module, layer, net.source)
            if shape is not None and this_shape != shape:
                raise NetworkError(
                    f"{net.source}: module {name} is for a layer of shape {this_shape}, another file's for {shape}."
                )
            shape = this_shape
            parts.append((on_device(module, device), weights[name]))
        if not parts:
            continue
        kxk = len(shape) == 4 and tuple(shape[2:]) != (1, 1)
        columns = math.prod(shape[1:])
        keep = min(conv_rank if kxk else rank, shape[0], columns)
        if all(is_plain_lora(module) for module, _ in parts):
            ups = [
                module.tensors["lora_up.weight"].reshape(shape[0], -1) * (w * module.scale)
                for module, w in parts
            ]
            downs = [module.tensors["lora_down.weight"].reshape(-1, columns) for module, _ in parts]
            u, s, vh = svd_of_product(torch.cat(ups, dim=1), torch.cat(downs, dim=0))
        else:
            total = sum(module.delta(shape) * w for module, w in parts)
            u, s, vh = svd(total.reshape(shape[0], -1))
        keep = min(keep, s.numel())
        up, down = truncate(u, s, vh, keep, clamp_quantile)
        up, down = factor_shapes(up.cpu(), down.cpu(), shape)
        report.modules[name] = Factors(up, down, float(keep))
        report.retained[name] = retained(s, keep).fro
