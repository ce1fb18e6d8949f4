"""`lorakit merge --model`: LoRAs baked into a checkpoint.

A single-file model is streamed: each tensor is read, the deltas of the modules that target
it are added, and it is written straight out, so memory holds a few tensors
rather than the model (an SDXL merge fits in well under 8 GB). A diffusers folder on either side
goes through the in-memory path (`merge_networks` on a loaded model) instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..models.ldm.common import Op, to_diffusers
from ..models.load import load_model
from ..models.save import PRECISIONS, save_diffusers, save_single_file, single_file_metadata
from ..networks.apply import NetworkSpec, merge_networks
from ..networks.reading import ModuleWeights, load_network
from ..utils.files import atomic_path
from .checkpoint import CheckpointWeights, add_in_original
from .deltas import on_device
from .specs import RECIPE_KEY, LoraSpec, as_spec, check_exists, module_strengths, recipe_entry
from .streaming import safetensors_writer
from .svd import resolve_device


@dataclass
class CheckpointMerge:
    """What `merge_into_checkpoint` did."""

    output: Path
    streamed: bool
    # per LoRA: (label, modules merged, modules left out by a block weight of 0)
    loras: list[tuple[str, int, int]] = field(default_factory=list)
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
    check_exists(specs)
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
        {"base": base.name, "loras": [recipe_entry(spec, net) for spec, net in zip(specs, nets)]}
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
        strengths = module_strengths(net, spec, source.family, source.index)
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
        strengths = module_strengths(net, spec, model.family, None)
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
