"""X/Y/Z plots: the same image request varied along up to three axes, drawn as one labelled PNG
plus the single images, as A1111's "X/Y/Z plot" script does, without moving files into a webui.

Axis kinds (`--x KIND=VALUES`, values comma-separated, quotes allowed as in A1111):
  lora     LoRA files: paths or globs, ordered by epoch; "none" for no LoRA
  weight   LoRA strength; numbers or ranges "0-1 [5]" (5 values) / "0-1 (+0.25)" (step)
  prompt   Prompt S/R: the first value is searched for, each value replaces it
  sampler  A1111 or sd-scripts sampler names
  cfg, steps, seed
  blocks   A1111 LoRA Block Weight presets or vectors (quote vectors: "1,0,0,...")

All cells share one seed unless seed is an axis. The base model and the pipeline are loaded once;
networks are merged and unmerged between cells.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..errors import LorakitError
from ..runs import RunRecord, epoch_of, sort_by_epoch
from ..utils.files import atomic_path
from .drawing import GridLayout, draw_grid
from .generate import GeneratedImage, GenerationSettings, Generator, random_seed
from .pngmeta import png_info
from .prompts import NETWORK_SUFFIXES, LoraRef
from .samplers import find_sampler

log = logging.getLogger(__name__)

# The weights of a run's best-epoch grid (`lorakit grid --run` and the quickstart): 0 is the base
# model alone, for comparison; 0.5 and 1 show how the LoRA's effect grows.
RUN_WEIGHTS = (0.0, 0.5, 1.0)


class GridError(LorakitError):
    """An axis or grid request lorakit cannot run as given."""


KINDS = {
    "lora": "LoRA",
    "weight": "LoRA weight",
    "prompt": "Prompt S/R",
    "sampler": "Sampler",
    "cfg": "CFG scale",
    "steps": "Steps",
    "seed": "Seed",
    "blocks": "Block weights",
}
ALIASES = {
    "loras": "lora",
    "epoch": "lora",
    "epochs": "lora",
    "file": "lora",
    "strength": "weight",
    "multiplier": "weight",
    "prompt_sr": "prompt",
    "sr": "prompt",
    "prompt s/r": "prompt",
    "scale": "cfg",
    "cfg scale": "cfg",
    "lbw": "blocks",
    "block": "blocks",
    "block_weights": "blocks",
}


@dataclass
class Axis:
    kind: str
    values: list
    labels: list[str]

    @property
    def title(self) -> str:
        return KINDS[self.kind]

    def __len__(self) -> int:
        return len(self.values)


def _split_values(text: str) -> list[str]:
    """Comma-separated values; "..." keeps commas inside a value (A1111 reads them with csv)."""
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    return [v.strip() for row in rows for v in row if v.strip()]


_RANGE_COUNT = re.compile(r"^\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*\[\s*(\d+)\s*\]\s*$")
_RANGE_STEP = re.compile(r"^\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*\(\s*([+-]?[\d.]+)\s*\)\s*$")
_RANGE_PLAIN = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


def _numbers(values: list[str], cast, kind: str) -> list:
    """Numbers and A1111 ranges: "1-5" (ints), "0-1 [5]" (5 evenly spaced), "0-1 (+0.25)"."""
    out: list = []
    for value in values:
        if m := _RANGE_COUNT.match(value):
            start, end, count = float(m[1]), float(m[2]), int(m[3])
            step = (end - start) / (count - 1) if count > 1 else 0
            out.extend(cast(round(start + i * step, 10)) for i in range(count))
        elif m := _RANGE_STEP.match(value):
            start, end, step = float(m[1]), float(m[2]), float(m[3])
            if step == 0 or (end - start) * step < 0:
                raise GridError(f"{kind} range '{value}': the step does not lead from start to end.")
            n = int(round((end - start) / step + 1e-9)) + 1
            out.extend(cast(round(start + i * step, 10)) for i in range(n))
        elif cast is int and (m := _RANGE_PLAIN.match(value)):
            a, b = int(m[1]), int(m[2])
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        else:
            try:
                out.append(cast(value))
            except ValueError as e:
                raise GridError(f"{kind} axis: '{value}' is not a number.") from e
    return out


def _expand_loras(values: list[str], base: Path | None) -> list[Path | None]:
    found: list[Path | None] = []
    for value in values:
        if value.lower() in ("none", "base", "-"):
            found.append(None)
            continue
        pattern = str(base / value) if base and not Path(value).is_absolute() else value
        if Path(pattern).is_dir():
            pattern = str(Path(pattern) / "*.safetensors")
        if glob.has_magic(pattern):
            matches = [Path(p) for p in glob.glob(pattern) if Path(p).suffix.lower() in NETWORK_SUFFIXES]
            if not matches:
                raise GridError(f"lora axis: '{value}' matches no LoRA file.")
            found.extend(sort_by_epoch(matches))
        elif Path(pattern).is_file():
            found.append(Path(pattern))
        else:
            raise GridError(f"lora axis: file '{value}' does not exist.")
    return found


def _lora_label(path: Path | None) -> str:
    return "no LoRA" if path is None else path.stem


def parse_axis(text: str, lora_base: Path | None = None) -> Axis:
    """`KIND=VALUES` from the command line, e.g. `weight=0,0.5,1` or `lora=out/*.safetensors`."""
    kind, eq, rest = text.partition("=")
    if not eq:
        raise GridError(
            f"axis '{text}': write KIND=VALUES, e.g. weight=0.5,0.75,1 (kinds: {', '.join(KINDS)})."
        )
    kind = kind.strip().lower()
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise GridError(f"axis kind '{kind}' is unknown; use one of {', '.join(KINDS)}.")
    values = _split_values(rest)
    if not values:
        raise GridError(f"axis '{text}' has no values.")
    return make_axis(kind, values, lora_base)


def make_axis(kind: str, values: list, lora_base: Path | None = None) -> Axis:
    if kind == "lora":
        paths = _expand_loras([str(v) for v in values], lora_base)
        return Axis(kind, paths, [_lora_label(p) for p in paths])
    if kind in ("weight", "cfg"):
        numbers = _numbers([str(v) for v in values], float, kind)
        return Axis(kind, numbers, [f"{v:g}" for v in numbers])
    if kind in ("steps", "seed"):
        numbers = _numbers([str(v) for v in values], int, kind)
        return Axis(kind, numbers, [str(v) for v in numbers])
    if kind == "sampler":
        names = [find_sampler(str(v)).name for v in values]
        return Axis(kind, names, names)
    if kind == "prompt":
        return Axis(kind, [str(v) for v in values], [str(v) for v in values])
    return Axis(kind, [str(v) for v in values], [str(v) for v in values])  # blocks


@dataclass
class Cell:
    x: int
    y: int
    z: int
    settings: GenerationSettings
    image: GeneratedImage | None = None
    file: Path | None = None


@dataclass
class GridResult:
    image: Image.Image
    layout: GridLayout
    cells: list[Cell]
    path: Path | None = None
    axes: dict[str, Axis | None] = field(default_factory=dict)


def cell_settings(
    base: GenerationSettings, axes: list[tuple[Axis | None, int]], default_weight: float = 1.0
) -> GenerationSettings:
    """The request of one cell: `base` with each axis' value at its index applied."""
    s = replace(base, loras=list(base.loras))
    search = None
    axis_lora: LoraRef | None = None
    has_lora_axis = False
    weight = blocks = None
    for axis, i in axes:
        if axis is None:
            continue
        value = axis.values[i]
        if axis.kind == "lora":
            has_lora_axis = True
            axis_lora = LoraRef(value, default_weight) if value is not None else None
        elif axis.kind == "weight":
            weight = value
        elif axis.kind == "blocks":
            blocks = value
        elif axis.kind == "prompt":
            search = axis.values[0]
            s.prompt = s.prompt.replace(search, value)
            s.negative_prompt = s.negative_prompt.replace(search, value)
        elif axis.kind == "sampler":
            s.sampler = value
        elif axis.kind == "cfg":
            s.cfg = value
        elif axis.kind == "steps":
            s.steps = value
        elif axis.kind == "seed":
            s.seed = value
    if has_lora_axis:
        if axis_lora is not None:
            s.loras.append(axis_lora)
            targets = [axis_lora]
        else:
            targets = []
    else:
        targets = s.loras
    if weight is not None or blocks is not None:
        for i, lora in enumerate(s.loras):
            if lora in targets:  # a weight axis sets one strength for the text encoder and U-Net
                s.loras[i] = replace(
                    lora,
                    weight=weight if weight is not None else lora.weight,
                    unet_weight=None if weight is not None else lora.unet_weight,
                    blocks=blocks if blocks is not None else lora.blocks,
                )
    return s


def check_axes(base: GenerationSettings, axes: list[Axis | None]) -> None:
    kinds = [a.kind for a in axes if a is not None]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            raise GridError(f"the {kind} axis is given twice; use each kind once.")
    if ("weight" in kinds or "blocks" in kinds) and "lora" not in kinds and len(base.loras) != 1:
        raise GridError(
            "a weight or blocks axis needs a lora axis, or exactly one --lora to vary "
            f"(there are {len(base.loras)})."
        )
    for axis in axes:
        if axis is not None and axis.kind == "prompt":
            search = axis.values[0]
            if search not in base.prompt and search not in base.negative_prompt:
                raise GridError(
                    f"Prompt S/R: the first value '{search}' is what gets replaced, but the prompt does "
                    f"not contain it. Prompt: {base.prompt!r}"
                )


def run_grid(
    generator: Generator,
    base: GenerationSettings,
    x: Axis | None = None,
    y: Axis | None = None,
    z: Axis | None = None,
    out: str | Path | None = None,
    default_weight: float = 1.0,
    row_label_suffixes: list[str] | None = None,
    font_size: int | None = None,
    caption: str | None = None,
) -> GridResult:
    """Generate every cell with one generator (one pipeline, base weights loaded once) and draw
    the grid, captioned with its prompt unless `caption` says otherwise. With `out`, writes
    grid.png, the cell images (cells/) and grid.json there. Cells whose LoRAs are all at weight 0
    show the base model: it is drawn once and shared (merging at 0 changes no weight)."""
    check_axes(base, [x, y, z])
    if base.batch != 1:
        raise GridError("a grid makes one image per cell; leave batch at 1.")
    if base.seed is None or base.seed < 0:  # one seed for the whole grid, as A1111 does
        base = replace(base, seed=random_seed())
    sizes = [len(a) if a is not None else 1 for a in (x, y, z)]
    cells = [
        Cell(i, j, k, cell_settings(base, [(x, i), (y, j), (z, k)], default_weight))
        for k in range(sizes[2])
        for j in range(sizes[1])
        for i in range(sizes[0])
    ]
    for cell in cells:
        generator.resolve(cell.settings)
        for lora in cell.settings.loras:
            generator.networks.check(lora)
    # cells with the same networks one after another: fewer merges
    order = sorted(
        cells, key=lambda c: tuple((str(r.path), r.weight, r.unet, str(r.blocks)) for r in c.settings.loras)
    )
    drawn: dict[str, GeneratedImage] = {}
    for n, cell in enumerate(tqdm(order, desc="cells", leave=False, dynamic_ncols=True), 1):
        log.debug("cell %d/%d: %s", n, len(cells), _describe(cell, x, y, z))
        key = repr(replace(cell.settings, loras=[r for r in cell.settings.loras if not _off(r)]))
        if key in drawn:
            same = drawn[key]
            parameters = generator.parameters(generator.resolve(cell.settings), same.seed)
            cell.image = GeneratedImage(same.image, same.seed, parameters)
        else:
            cell.image = drawn[key] = generator(cell.settings)[0]
    generator.close()

    labels = [a.labels if a is not None else [""] for a in (x, y, z)]
    y_labels = list(labels[1])
    if row_label_suffixes:
        y_labels = [
            f"{label}\n{extra}" if extra else label for label, extra in zip(y_labels, row_label_suffixes)
        ]
    grid = [[[None] * sizes[0] for _ in range(sizes[1])] for _ in range(sizes[2])]
    for cell in cells:
        grid[cell.z][cell.y][cell.x] = cell.image.image
    image, layout = draw_grid(
        grid,
        labels[0] if x is not None else [""],
        y_labels if y is not None else [""],
        labels[2] if z is not None else None,
        x.title if x is not None else "",
        y.title if y is not None else "",
        z.title if z is not None else "",
        font_size=font_size,
        caption=prompt_caption(base) if caption is None else caption,
    )
    result = GridResult(image, layout, cells, axes={"x": x, "y": y, "z": z})
    if out is not None:
        save_grid(result, Path(out))
    return result


def _off(lora: LoraRef) -> bool:
    """A LoRA at weight 0 for the text encoder and the U-Net: it changes nothing."""
    return lora.weight == 0 and (lora.unet_weight is None or lora.unet_weight == 0)


def prompt_caption(s: GenerationSettings) -> str:
    """What a grid shows, written on it: the prompt (and negative prompt)."""
    return f"prompt: {s.prompt}" + (f"\nnegative: {s.negative_prompt}" if s.negative_prompt else "")


def grids(
    generator: Generator,
    requests: list[GenerationSettings],
    x: Axis | None,
    y: Axis | None,
    z: Axis | None,
    out: Path,
    **options,
) -> list[GridResult]:
    """One grid per request (prompt), in `out` for a single prompt, else in out/prompt-01/ ...;
    `options` go to `run_grid`. The generator stays loaded between them."""
    results = []
    for i, request in enumerate(requests):
        folder = out if len(requests) == 1 else out / f"prompt-{i + 1:02d}"
        if len(requests) > 1:
            log.info("grid %d/%d: %s -> %s", i + 1, len(requests), request.prompt, folder)
        results.append(run_grid(generator, request, x, y, z, out=folder, **options))
    return results


def best_epoch_grids(
    generator: Generator,
    record: RunRecord,
    requests: list[GenerationSettings],
    out: Path,
    weights=RUN_WEIGHTS,
    font_size: int | None = None,
) -> list[GridResult]:
    """The grids of a finished run (`lorakit grid --run`, the quickstart): per sample prompt, its
    saved epochs (rows, with validation losses) x LoRA weights (columns, 0 = the base model)."""
    weight_axis, epochs, suffixes = run_axes(record, weights)
    return grids(
        generator, requests, weight_axis, epochs, None, out, row_label_suffixes=suffixes, font_size=font_size
    )


def _describe(cell: Cell, *axes) -> str:
    parts = []
    for axis, i in zip(axes, (cell.x, cell.y, cell.z)):
        if axis is not None:
            parts.append(f"{axis.kind}={axis.labels[i]}")
    return ", ".join(parts) or "single cell"


def _safe(text: str, limit: int = 40) -> str:
    return re.sub(r"[^\w.\-]+", "_", text, flags=re.UNICODE).strip("_")[:limit] or "x"


def save_grid(result: GridResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cell_dir = out / "cells"
    x, y, z = (result.axes.get(k) for k in ("x", "y", "z"))
    records = []
    for n, cell in enumerate(result.cells):
        parts = [f"{n:03d}"]
        for axis, i in ((z, cell.z), (y, cell.y), (x, cell.x)):
            if axis is not None:
                parts.append(_safe(axis.labels[i]))
        cell.file = cell.image.save(cell_dir / ("-".join(parts) + ".png"))
        records.append(
            {
                "x": cell.x,
                "y": cell.y,
                "z": cell.z,
                "file": str(cell.file.relative_to(out)),
                "seed": cell.image.seed,
                "parameters": cell.image.parameters.to_text(),
            }
        )
    path = out / "grid.png"
    first = result.cells[0].image.parameters
    with atomic_path(path) as tmp:
        result.image.save(tmp, format="PNG", pnginfo=png_info(first))
    summary = {
        "grid": "grid.png",
        "size": list(result.image.size),
        "axes": {
            name: ({"kind": a.kind, "labels": a.labels} if a is not None else None)
            for name, a in (("x", x), ("y", y), ("z", z))
        },
        "cells": records,
    }
    with atomic_path(out / "grid.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    result.path = path
    return path


# ---- best epoch from a training run ---------------------------------------------------------


def run_axes(record: RunRecord, weights=RUN_WEIGHTS) -> tuple[Axis, Axis, list[str]]:
    """The default best-epoch grid of a run: weights across, epochs down, each row labelled with
    its validation loss (the lowest marked)."""
    files = [e.file for e in record.epochs]
    epochs = Axis("lora", files, [_epoch_label(e.epoch, e.file) for e in record.epochs])
    weight_axis = make_axis("weight", list(weights))
    best = record.best_epoch()
    suffixes = []
    for e in record.epochs:
        if e.validation_loss is None:
            suffixes.append("")
        else:
            suffixes.append(f"val {e.validation_loss:.4f}" + (" (lowest)" if e == best else ""))
    return weight_axis, epochs, suffixes


def _epoch_label(epoch: int | None, path: Path) -> str:
    if epoch is None:
        epoch = epoch_of(path)
    return f"epoch {epoch}" if epoch is not None else f"{path.stem} (final)"
