"""`lorakit extract`: a LoRA/LoCon that approximates the difference between two checkpoints.

For every layer a LoRA of sd-scripts' default targets would hook (plus the ResNet/sampler
layers with a conv dim), ΔW = W_tuned − W_base is truncated by SVD to the rank asked for. Both
checkpoints are read one layer at a time. Fine-tunes often leave the text encoder untouched:
when no text-encoder weight moved by more than `min_diff`, it is left out (as sd-scripts does),
and the report says so. Each module's alpha is its rank (scale 1), so the file holds ΔW itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..networks.errors import NetworkError
from ..networks.file import resolve_precision, save_network_file
from ..networks.naming import Layer
from ..utils.files import refuse_input
from .checkpoint import open_weights
from .lorafile import Factors, kohya_tensors
from .svd import factor_shapes, resolve_device, retained, svd, truncate


@dataclass
class ExtractReport:
    output: Path
    modules: int = 0
    text_encoder_skipped: bool = False
    text_encoder_max_diff: float = 0.0  # the largest |W_tuned - W_base| seen in the text encoders
    min_diff: float = 0.0
    fro_retained: dict[str, float] = field(default_factory=dict)

    @property
    def text_encoder_note(self) -> str:
        if self.text_encoder_skipped:
            return (
                f"text encoder unchanged (largest difference {self.text_encoder_max_diff:.3g} <= --min-diff "
                f"{self.min_diff:g}): extracted the U-Net only"
            )
        return f"text encoder changed (a difference of {self.text_encoder_max_diff:.3g} > --min-diff {self.min_diff:g}): extracted it too"


def _targets(index, conv_dim: int | None) -> list[Layer]:
    groups = ("attention", "text", "conv") if conv_dim else ("attention", "text")
    return [layer for layer in index.layers.values() if layer.group in groups]


def extract_lora(
    base: str | Path,
    tuned: str | Path,
    out: str | Path,
    dim: int,
    *,
    conv_dim: int | None = None,
    clamp_quantile: float | None = 0.99,
    min_diff: float = 0.01,
    precision: str | None = None,
    device: str | None = "auto",
    progress: bool = False,
) -> ExtractReport:
    """Write a LoRA (LoCon with conv_dim) of `tuned` − `base` to `out`.

    dim: rank of Linear and 1x1 layers; conv_dim: rank of 3x3 convolutions (and adds the ResNet
    layers). clamp_quantile: clamp factor values to that quantile as sd-scripts does (None or 1:
    the exact truncated SVD). precision: the stored dtype; default float32, the SVD's own.
    """
    refuse_input(out, [base, tuned])
    out = Path(out)
    if dim < 1 or (conv_dim is not None and conv_dim < 1):
        raise LorakitError("--dim (and --conv-dim) must be at least 1.")
    if clamp_quantile is not None and not 0 < clamp_quantile <= 1:
        raise LorakitError(
            f"--clamp-quantile {clamp_quantile}: use a fraction in (0, 1], e.g. 0.99 (1: no clamping)."
        )
    dev = resolve_device(device)
    a, b = open_weights(base), open_weights(tuned)
    if a.family != b.family:
        raise NetworkError(
            f"--base {base} is {a.family.label} and --tuned {tuned} is {b.family.label}; a LoRA is the "
            "difference of two models of the same family."
        )
    layers = _targets(a.index, conv_dim)
    pairs = []
    for layer in layers:
        other = b.index.layers.get(layer.name)
        if other is None or other.weight_shape != layer.weight_shape:
            raise NetworkError(
                f"layer {layer.name} has shape {layer.weight_shape} in {base} but "
                f"{other.weight_shape if other else 'does not exist'} in {tuned}: the two models differ in size."
            )
        pairs.append((layer, other))

    report = ExtractReport(out, min_diff=min_diff)
    text = [(x, y) for x, y in pairs if x.part != "unet"]
    for x, y in text:  # stops at the first layer that moved enough
        diff = float((b.weight(y).float() - a.weight(x).float()).abs().max())
        report.text_encoder_max_diff = max(report.text_encoder_max_diff, diff)
        if diff > min_diff:
            break
    if text and report.text_encoder_max_diff <= min_diff:
        report.text_encoder_skipped = True
        pairs = [(x, y) for x, y in pairs if x.part == "unet"]

    factors: dict[str, Factors] = {}
    for x, y in tqdm(pairs, desc="extracting", unit="module", disable=not progress):
        shape = x.weight_shape
        diff = b.weight(y).to(dev, torch.float32) - a.weight(x).to(dev, torch.float32)
        matrix = diff.reshape(shape[0], -1)
        rank = min(conv_dim if (x.is_conv_kxk and conv_dim) else dim, *matrix.shape)
        u, s, vh = svd(matrix)
        up, down = truncate(u, s, vh, rank, clamp_quantile)
        up, down = factor_shapes(up.cpu(), down.cpu(), shape)
        factors[x.name] = Factors(up, down, float(rank))
        report.fro_retained[x.name] = retained(s, rank).fro
    report.modules = len(factors)

    model = a.model
    meta = {
        "ss_v2": str(model.family.name == "sd2"),
        "ss_base_model_version": model.base_model_version,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(dim)),
        "ss_network_args": json.dumps({"conv_dim": str(conv_dim), "conv_alpha": str(float(conv_dim))})
        if conv_dim
        else "",
        "ss_training_comment": f"extracted by lorakit from {Path(tuned).name} minus {Path(base).name}",
        "lorakit_extract": json.dumps(
            {
                "base": Path(base).name,
                "tuned": Path(tuned).name,
                "dim": dim,
                "conv_dim": conv_dim,
                "clamp_quantile": clamp_quantile,
                "min_diff": min_diff,
                "text_encoder": "skipped (unchanged)" if report.text_encoder_skipped else "extracted",
            }
        ),
    }
    save_network_file(
        out,
        kohya_tensors(factors),
        meta,
        resolve_precision(precision),
        model=model,
        modelspec={"title": out.stem},
    )
    return report
