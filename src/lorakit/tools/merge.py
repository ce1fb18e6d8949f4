"""`lorakit merge`: LoRAs baked into a checkpoint, or several LoRAs combined into one.

Into a checkpoint, a single-file model is streamed: each tensor is read, the deltas of the
modules that target it are added, and it is written straight out, so memory holds a few tensors
rather than the model (an SDXL merge fits in well under 8 GB). A diffusers folder on either side
goes through the in-memory path (`merge_networks` on a loaded model) instead.

Into one LoRA there are three ways, with different meanings of the weights (see `merge_loras`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..models.families import Family
from ..models.ldm.common import Op, to_diffusers
from ..models.load import load_model
from ..models.save import PRECISIONS, save_diffusers, save_single_file, single_file_metadata
from ..networks.apply import NetworkSpec, layer_strength, merge_networks
from ..networks.blocks import lbw_weights
from ..networks.errors import NetworkError
from ..networks.file import resolve_precision, save_network_file
from ..networks.naming import LayerIndex, full_size_index
from ..networks.reading import ModuleWeights, NetworkFile, load_network
from ..utils.files import atomic_path
from .checkpoint import CheckpointWeights, add_in_original
from .deltas import (
    is_plain_lora,
    layer_shape,
    on_device,
    require_no_dora,
    require_plain_lora,
    require_resolved,
)
from .lorafile import Factors, common_metadata, file_title, kohya_tensors, network_keys, stamp, stored_dtype
from .streaming import safetensors_writer
from .svd import factor_shapes, resolve_device, retained, svd, svd_of_product, truncate

RECIPE_KEY = "lorakit_merge_recipe"


@dataclass
class LoraSpec:
    """One LoRA to merge: its file, its weight, and an optional A1111 LBW vector or preset."""

    path: Path
    weight: float = 1.0
    blocks: str | Sequence[float] | None = None

    def __post_init__(self):
        self.path = Path(self.path)

    def label(self) -> str:
        """FILE-STEM:WEIGHT[:BLOCKS], the --lora syntax: what modelspec.merged_from lists (file
        names, as sd-scripts lists them; titles are often a generic "LoRA@date")."""
        text = f"{self.path.stem}:{self.weight:g}"
        if self.blocks is None:
            return text
        blocks = self.blocks if isinstance(self.blocks, str) else ",".join(f"{v:g}" for v in self.blocks)
        return f"{text}:{blocks}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_lora_spec(text: str) -> LoraSpec:
    """PATH[:WEIGHT[:BLOCKS]], read from the right so Windows paths (C:\\...) keep their colon."""
    parts = text.split(":")
    if len(parts) >= 3 and _is_number(parts[-2]) and not _is_number(parts[-1]) and parts[-1]:
        return LoraSpec(Path(":".join(parts[:-2])), float(parts[-2]), parts[-1])
    if len(parts) >= 2 and _is_number(parts[-1]):
        return LoraSpec(Path(":".join(parts[:-1])), float(parts[-1]))
    return LoraSpec(Path(text))


def as_spec(item) -> LoraSpec:
    if isinstance(item, LoraSpec):
        return item
    if isinstance(item, (tuple, list)):
        return LoraSpec(*item)
    if isinstance(item, str):
        return parse_lora_spec(item)
    return LoraSpec(Path(item))


def _check_exists(specs: Sequence[LoraSpec]) -> None:
    for spec in specs:
        if not spec.path.is_file():
            raise LorakitError(f"LoRA file {spec.path} does not exist. Check the path given with --lora.")


def _strengths(
    net: NetworkFile, spec: LoraSpec, family: Family | None, index: LayerIndex | None
) -> dict[str, float]:
    """Module -> weight x its LBW block weight (the rule `merge_networks` applies)."""
    if spec.blocks is None:
        return dict.fromkeys(net.modules, spec.weight)
    if family is None:
        raise NetworkError(
            f"{net.source}: block weights need to know the base model family, and the file does not say it."
        )
    blocks = lbw_weights(spec.blocks, family)
    out = {}
    for name in net.modules:
        layer = net.layers.get(name) or (index.get(name) if index is not None else None)
        if layer is None:
            raise NetworkError(
                f"{net.source}: module {name} matches no layer of a {family.label} model, so its block "
                "is unknown; block weights cannot be applied to this file."
            )
        out[name] = layer_strength(layer, spec.weight, blocks)
    return out


def _recipe_entry(spec: LoraSpec, net: NetworkFile) -> dict:
    return {
        "file": spec.path.name,
        "title": file_title(net),
        "weight": spec.weight,
        "blocks": spec.blocks if spec.blocks is None or isinstance(spec.blocks, str) else list(spec.blocks),
        "sshs_model_hash": net.metadata.get("sshs_model_hash"),
    }


# ---- into a checkpoint ---------------------------------------------------------------------------


@dataclass
class CheckpointMerge:
    """What `merge_into_checkpoint` did."""

    output: Path
    streamed: bool
    loras: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # (label, modules merged, at block weight 0)
    tensors_changed: int = 0
    seconds: float = 0.0


def merge_into_checkpoint(
    model: str | Path,
    loras: Sequence,
    out: str | Path,
    *,
    precision: str | None = None,
    to: str | None = None,
    device: str | None = "auto",
    progress: bool = False,
) -> CheckpointMerge:
    """Bake LoRAs (any algorithm lorakit reads; LoHa/LoKr/DoRA by their full delta) into `model`.

    loras: LoraSpec, "PATH[:WEIGHT[:BLOCKS]]" strings or (path, weight[, blocks]) tuples; each adds
    weight x (its block's LBW weight) x its delta, taken against the original weight as A1111 does.
    precision: "fp16" | "bf16" | "fp32" for every floating tensor; None keeps the file's dtypes.
    to: "single-file" | "diffusers"; by default from `out`'s suffix (.safetensors: single file).
    """
    start = time.perf_counter()
    model, out = Path(model), Path(out)
    specs = [as_spec(item) for item in loras]
    if not specs:
        raise LorakitError("nothing to merge: give at least one --lora FILE[:WEIGHT].")
    _check_exists(specs)
    if precision is not None and precision not in PRECISIONS:
        precision = {"float": "fp32", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(precision)
        if precision is None:
            raise LorakitError("precision must be fp16, bf16 or fp32.")
    layout = to or ("single-file" if out.suffix.lower() == ".safetensors" else "diffusers")
    if layout not in ("single-file", "diffusers"):
        raise LorakitError(f"--to {layout}: use single-file or diffusers.")
    if layout == "single-file" and out.suffix.lower() != ".safetensors":
        out = out.with_suffix(".safetensors")
    if out.resolve() == model.resolve():
        raise LorakitError(f"--out {out} is the input model; write the merged model to a new file.")
    if model.is_dir() or layout == "diffusers":
        report = _merge_in_memory(model, specs, out, precision, layout)
    else:
        report = _merge_streamed(model, specs, out, precision, resolve_device(device), progress)
    report.seconds = time.perf_counter() - start
    return report


def _checkpoint_metadata(meta: dict[str, str], base: Path, specs, nets, out: Path) -> dict[str, str]:
    """The base file's metadata, minus hashes that no longer hold, plus what was merged."""
    meta = {k: v for k, v in meta.items() if not k.startswith("sshs_") and k != "modelspec.hash_sha256"}
    labels = [base.stem] + [spec.label() for spec in specs]
    meta["modelspec.title"] = out.stem
    meta["modelspec.merged_from"] = ", ".join(labels)
    meta[RECIPE_KEY] = json.dumps(
        {"base": base.name, "loras": [_recipe_entry(spec, net) for spec, net in zip(specs, nets)]}
    )
    return meta


def _merge_streamed(
    base: Path, specs: list[LoraSpec], out: Path, precision: str | None, device: torch.device, progress: bool
) -> CheckpointMerge:
    source = CheckpointWeights(base)
    report = CheckpointMerge(out, streamed=True)
    plan: dict[str, list[tuple[ModuleWeights, float, Op]]] = {}
    nets = []
    for spec in specs:
        net = load_network(spec.path, model=source.model)  # a file for another family fails here
        nets.append(net)
        strengths = _strengths(net, spec, source.family, source.index)
        merged = 0
        for name, module in net.modules.items():
            if strengths[name] == 0:
                continue
            key, op = source.key(net.layers[name])
            plan.setdefault(key, []).append((on_device(module, device), strengths[name], op))
            merged += 1
        report.loras.append((spec.label(), merged, len(net.modules) - merged))

    reader = source.reader
    cast = PRECISIONS[precision] if precision else None

    def dtype_of(key: str) -> torch.dtype:
        dtype = reader.dtype(key)
        return cast if cast is not None and dtype.is_floating_point else dtype

    layout = [(key, dtype_of(key), reader.shape(key)) for key in reader]
    meta = single_file_metadata(source.model)  # adds the modelspec keys a bare file lacks
    meta = _checkpoint_metadata(meta, base, specs, nets, out)
    try:
        with safetensors_writer(out, layout, meta) as writer:
            for key in tqdm(list(reader), desc="merging", unit="tensor", disable=not progress):
                tensor = reader[key]
                if key in plan:
                    tensor = _merged_tensor(tensor, plan[key], device)
                    report.tensors_changed += 1
                writer.write(key, tensor.to(dtype_of(key)))
    finally:
        reader.close()
    return report


def _merged_tensor(tensor: torch.Tensor, contributions, device: torch.device) -> torch.Tensor:
    original = tensor.to(device=device, dtype=torch.float32)
    merged = original.clone()
    for module, strength, op in contributions:
        delta = module.merged_delta(to_diffusers(original, op)) * strength
        add_in_original(merged, delta, op)
    return merged.cpu()


def _merge_in_memory(
    base: Path, specs: list[LoraSpec], out: Path, precision: str | None, layout: str
) -> CheckpointMerge:
    model = load_model(base)
    report = CheckpointMerge(out, streamed=False)
    nets = []
    network_specs = []
    for spec in specs:
        net = load_network(spec.path, model=model)
        nets.append(net)
        strengths = _strengths(net, spec, model.family, None)
        merged = sum(1 for s in strengths.values() if s != 0)
        report.loras.append((spec.label(), merged, len(strengths) - merged))
        report.tensors_changed += merged
        network_specs.append(NetworkSpec(net, spec.weight, spec.blocks))
    merge_networks(model, network_specs)
    meta = _checkpoint_metadata(dict(model.metadata), base, specs, nets, out)
    if layout == "single-file":
        model.metadata = meta
        save_single_file(model, out, precision=precision, title=out.stem)
    else:
        save_diffusers(model, out, precision=precision)
        recipe = {"merged_from": meta["modelspec.merged_from"], **json.loads(meta[RECIPE_KEY])}
        with atomic_path(out / "lorakit_merge.json") as tmp:
            tmp.write_text(json.dumps(recipe, indent=2))
    return report


# ---- into one LoRA -------------------------------------------------------------------------------


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
    _check_exists(specs)
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
    strengths = [_strengths(net, spec, family, index) for net, spec in zip(nets, specs)]

    if new_rank is not None:
        mode = "svd"
        report = LoraMerge(out, mode)
        _svd_merge(
            nets, strengths, index, new_rank, new_conv_rank or new_rank, clamp_quantile, dev, report, progress
        )
    elif concat:
        mode = "concat"
        report = LoraMerge(out, mode, _concat(nets, strengths))
    else:
        mode = "same-to-strength" if same_to_strength else "weighted"
        report = LoraMerge(out, mode, _weighted(nets, strengths, same_to_strength))
    if not report.modules:
        raise NetworkError("every module has weight 0 (weights and block weights): nothing to write.")

    labels = [spec.label() for spec in specs]
    meta = common_metadata(nets)
    meta.update(network_keys(report.modules))
    meta["ss_training_comment"] = f"merged by lorakit ({mode}) from {', '.join(labels)}"
    stamp(meta, out.stem, ", ".join(labels))
    recipe = {"mode": mode, "loras": [_recipe_entry(spec, net) for spec, net in zip(specs, nets)]}
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


def _weighted(nets, strengths, same_to_strength: bool) -> dict[str, Factors]:
    merged: dict[str, Factors] = {}
    base_alpha: dict[str, float] = {}
    for net, weights in zip(nets, strengths):
        for name, module in net.modules.items():
            weight = weights[name]
            if weight == 0:
                continue
            require_no_dora(module, name, net.source, _DORA_INSTEAD)
            require_plain_lora(
                module, name, net.source, "the same-rank merge", "Use --new-rank R (SVD merge) for it."
            )
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
    for net, weights in zip(nets, strengths):
        for name, module in net.modules.items():
            weight = weights[name]
            if weight == 0:
                continue
            require_no_dora(module, name, net.source, _DORA_INSTEAD)
            require_plain_lora(module, name, net.source, "--concat", "Use --new-rank R (SVD merge) for it.")
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
