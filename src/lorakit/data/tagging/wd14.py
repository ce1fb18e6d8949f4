"""WD14-family ONNX taggers: SmilingWolf's v2 and v3 (`model.onnx` + `selected_tags.csv`) and the
`tag_mapping.json` layout (cl_tagger), with the preprocessing of sd-scripts'
`finetune/tag_images_by_wd14_tagger.py`, and the choice of tags from the scores.

The pixels a model gets: the image composited on white (`images.load_image`, which also applies
EXIF rotation and scales 16-bit images, where sd-scripts would clip them to white), RGB -> BGR,
padded to a centred white square, resized to the model's input size (area averaging when
shrinking, as cv2.INTER_AREA; Pillow's Lanczos when enlarging, as sd-scripts), float32 0-255 NHWC
for the SmilingWolf layout, NCHW scaled to [-1, 1] for tag_mapping.json models, whose outputs
are logits and go through a sigmoid here. Input size, layout and batch size come from the model.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import ConfigError, ModelError
from .models import tagger_files

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - an optional dependency; load_tagger says how to get it
    ort = None

# selected_tags.csv category codes (Danbooru's); SmilingWolf's files use 9, 0 and 4
CSV_CATEGORIES = {
    "9": "rating",
    "0": "general",
    "4": "character",
    "1": "artist",
    "3": "copyright",
    "5": "meta",
}
PICK_ONE = ("rating", "quality")  # categories that give one tag: the best-scoring one
# kaomoji longer than 3 characters: kept with their underscores by --remove_underscore
KAOMOJI = {"(o)_(o)", "<o>_<o>", "<|>_<|>", "||_||"}


@dataclass(frozen=True)
class Label:
    name: str  # as the model's tag list writes it
    category: str  # "general", "character", "rating", ... ("" for an unused output)


@dataclass(frozen=True)
class Tag:
    name: str  # as written into the caption
    score: float
    category: str


# ---- pixels ---------------------------------------------------------------------------------


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel, the input pixels it covers and by how much, in units of 1/n_out of
    an input pixel (integers, so no rounding happens before the final division). Output pixel i
    covers input positions [i*n_in, (i+1)*n_in) / n_out."""
    starts = np.arange(n_out, dtype=np.int64) * n_in
    j = starts[:, None] // n_out + np.arange(-(-n_in // n_out) + 1)
    w = np.minimum(starts[:, None] + n_in, (j + 1) * n_out) - np.maximum(starts[:, None], j * n_out)
    return np.minimum(j, n_in - 1), np.clip(w, 0, None)


def _area_sums(a: np.ndarray, n_out: int, dtype) -> np.ndarray:
    """Area sums along the first axis (n_in -> n_out < n_in): a few gathers of whole rows, each
    weighted, instead of a dense matrix."""
    j, w = _area_taps(a.shape[0], n_out)
    shape = (n_out,) + (1,) * (a.ndim - 1)
    out = None
    for t in range(j.shape[1]):
        part = np.multiply(a[j[:, t]], w[:, t].astype(dtype).reshape(shape), dtype=dtype)
        out = part if out is None else np.add(out, part, out=out)
    return out


def area_resize(square: np.ndarray, size: int) -> np.ndarray:
    """Shrink a (S, S, C) uint8 square to (size, size, C) by averaging the exact area each output
    pixel covers (what cv2.INTER_AREA does), rounded half up. The sums are integers: after the
    first axis at most 255*S (exact in float32 below 2**24), after the second 255*S*S (float64)."""
    side = square.shape[0]
    first = np.float32 if 255 * side < 2**24 else np.float64
    rows = _area_sums(square, size, first)  # (size, S, C)
    sums = _area_sums(np.ascontiguousarray(rows.transpose(1, 0, 2)), size, np.float64).transpose(1, 0, 2)
    d = float(side * side)
    return np.floor((2 * sums + d) / (2 * d)).astype(np.uint8)


def tagger_pixels(rgb: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) float32 BGR 0-255: what a WD14 tagger sees of an (H, W, 3) uint8 RGB image."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.full((side, side, 3), 255, dtype=np.uint8)
    square[top : top + h, left : left + w] = rgb
    if side > size:
        square = area_resize(square, size)
    elif side < size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(square[:, :, ::-1], dtype=np.float32)


# ---- tag lists ------------------------------------------------------------------------------


def read_selected_tags(path: Path) -> list[Label]:
    """SmilingWolf's `selected_tags.csv` (tag_id,name,category,count): one row per model output."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise ModelError(
            f"{path}: not a tagger tag list (the first line must be tag_id,name,category,count)."
        )
    return [Label(row[1], CSV_CATEGORIES.get(row[2].strip(), "other")) for row in rows[1:] if len(row) >= 3]


def read_tag_mapping(path: Path) -> list[Label]:
    """A `tag_mapping.json` ({"0": {"tag": ..., "category": "General"}, ...}, or a list of such
    entries): ids are output positions; a gap is an output that no tag uses."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not a readable tag_mapping.json ({e}); download it again.") from None
    entries = dict(enumerate(data)) if isinstance(data, list) else data
    try:
        by_id = {int(k): Label(str(v["tag"]), str(v["category"]).lower()) for k, v in entries.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ModelError(
            f'{path}: entries must look like "0": {{"tag": "1girl", "category": "General"}}.'
        ) from None
    return [by_id.get(i, Label("", "")) for i in range(max(by_id, default=-1) + 1)]


# ---- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInput:
    name: str
    size: int
    channels_first: bool  # NCHW (tag_mapping.json models) or NHWC (SmilingWolf)
    batch_size: int | None  # fixed by the model (some v2 files take 1 image only), None = any


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError(
            "--device cuda: onnxruntime has no CUDA provider here. Install onnxruntime-gpu "
            "(pip uninstall onnxruntime; pip install onnxruntime-gpu) or use --device cpu."
        )
    return ["CPUExecutionProvider"]


def _model_input(session, path: Path) -> ModelInput:
    spec = session.get_inputs()[0]
    shape = list(spec.shape)
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise ModelError(
            f"{path}: input {spec.name} has shape {shape}; a tagger takes images (N, H, W, 3) or (N, 3, H, W)."
        )
    channels_first = shape[1] == 3 and shape[3] != 3
    h, w = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    if not isinstance(h, int) or h != w:
        raise ModelError(
            f"{path}: input size {h}x{w} is not a fixed square; lorakit cannot tell what size to give it."
        )
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return ModelInput(spec.name, h, channels_first, batch)


class WD14Tagger:
    """An ONNX tagger and its tag list. `scores` turns images into one probability per label."""

    def __init__(self, model_file: Path, label_file: Path, device: str = "auto", threads: int | None = None):
        if ort is None:
            raise ModelError(
                "tagging needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu for CUDA)."
            )
        self.model_file, self.label_file = Path(model_file), Path(label_file)
        self.json_layout = self.label_file.suffix == ".json"
        self.labels = (
            read_tag_mapping(self.label_file) if self.json_layout else read_selected_tags(self.label_file)
        )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.model_file), options, providers=_providers(device))
        except Exception as e:  # onnxruntime raises its own types for damaged or foreign files
            raise ModelError(
                f"{self.model_file}: onnxruntime cannot load it ({e}); download it again."
            ) from None
        self.input = _model_input(self.session, self.model_file)
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.labels):
            raise ModelError(
                f"{self.model_file} gives {outputs[-1]} scores but {self.label_file.name} lists {len(self.labels)} "
                "tags: the two files come from different models. Download both from the same repository."
            )

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """One image as the model takes it, without the batch axis."""
        x = tagger_pixels(rgb, self.input.size)
        if self.json_layout:
            x = x / np.float32(127.5) - np.float32(1.0)
        if self.input.channels_first:
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """(N, labels) probabilities for a stack of `pixels` (the model's fixed batch size is honoured)."""
        step = self.input.batch_size or len(batch)
        out = []
        for i in range(0, len(batch), step):
            chunk = batch[i : i + step]
            if len(chunk) < step:  # a model with a fixed batch size takes only full batches
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run(None, {self.input.name: chunk})[0][: len(batch) - i])
        probs = np.concatenate(out, axis=0).astype(np.float64)
        if self.json_layout:
            probs = 1.0 / (1.0 + np.exp(-np.clip(probs, -60, 60)))
        return probs

    def predict(self, images: Sequence[np.ndarray], options: TagOptions | None = None) -> list[list[Tag]]:
        """The tags of RGB uint8 images, in caption order, with their scores."""
        choose = TagChooser(self.labels, options or TagOptions(), by_score=self.json_layout)
        return [choose(p) for p in self.scores(np.stack([self.pixels(im) for im in images]))]


def load_tagger(folder: str | Path, device: str = "auto", threads: int | None = None) -> WD14Tagger:
    """The tagger in `folder` (a model file beside selected_tags.csv or tag_mapping.json)."""
    files = tagger_files(Path(folder))
    if files is None:
        raise ModelError(f"{folder}: no tagger here (model.onnx with selected_tags.csv or tag_mapping.json).")
    return WD14Tagger(*files, device=device, threads=threads)


# ---- choosing tags --------------------------------------------------------------------------


@dataclass
class TagOptions:
    """sd-scripts' tagger options, same names and defaults. Differences, on purpose:
    `tag_replacement` works in both layouts (sd-scripts' does nothing for selected_tags.csv and
    maps every tag to the target for tag_mapping.json); `always_first_tags` keeps the order given
    and adds a tag the model does not know (a trigger word) to every caption, while a tag the
    model knows (1girl) still goes first only where it was found; `character_tags_first` keeps
    the characters in order; the order of tags is the tag list's, or by score with
    `sort_by_score` (the default of tag_mapping.json models, as in sd-scripts)."""

    thresh: float = 0.35
    general_threshold: float | None = None
    character_threshold: float | None = None
    copyright_threshold: float | None = None
    artist_threshold: float | None = None
    meta_threshold: float | None = None
    model_threshold: float | None = None
    mcut: bool = False
    undesired_tags: Sequence[str] = ()
    always_first_tags: Sequence[str] = ()
    character_tags_first: bool = False
    use_rating_tags: bool = False
    use_rating_tags_as_last_tag: bool = False
    use_quality_tags: bool = False
    use_quality_tags_as_last_tag: bool = False
    remove_underscore: bool = False
    character_tag_expand: bool = False
    tag_replacement: Mapping[str, str] = field(default_factory=dict)
    sort_by_score: bool | None = None

    def threshold(self, category: str) -> float:
        value = getattr(self, f"{category}_threshold", None)
        return self.thresh if value is None else value


def parse_tag_replacement(text: str | None) -> dict[str, str]:
    """sd-scripts' `--tag_replacement` text, `old,new;old2,new2` (`\\,` and `\\;` inside a tag)."""
    if not text:
        return {}
    comma, semi = "\x00", "\x01"
    pairs = {}
    for pair in text.replace("\\,", comma).replace("\\;", semi).split(";"):
        if not pair.strip():
            continue
        parts = pair.split(",")
        if len(parts) != 2 or not parts[0].strip():
            raise ConfigError(
                f"--tag_replacement: '{pair.replace(comma, ',').replace(semi, ';')}' must be OLD,NEW; separate "
                "pairs with ';' and write a comma or semicolon inside a tag as \\, or \\;."
            )
        old, new = (p.strip().replace(comma, ",").replace(semi, ";") for p in parts)
        pairs[old] = new
    return pairs


def split_list(text: str | None, separator: str = ",") -> list[str]:
    """`--undesired_tags`/`--always_first_tags` text -> tags, split at the caption separator's mark."""
    mark = separator.strip() or ","
    return [t.strip() for t in (text or "").split(mark) if t.strip()]


def _expand_character(name: str) -> list[str]:
    """`name_(series)` -> [`name`, `series`]; `name_(costume)_(series)` -> [`name_(costume)`, `series`]."""
    if not name.endswith(")") or "(" not in name:
        return [name]
    head, _, series = name.rpartition("(")
    return [head[:-1] if head.endswith("_") else head, series[:-1]]


def _clean(name: str, options: TagOptions) -> str:
    if options.remove_underscore and len(name) > 3 and name not in KAOMOJI:
        name = name.replace("_", " ")
    return name


def caption_names(labels: Sequence[Label], options: TagOptions) -> list[list[str]]:
    """For each label, the tag(s) it writes: expanded, underscores removed, replaced."""
    out = []
    for label in labels:
        parts = (
            _expand_character(label.name)
            if options.character_tag_expand and label.category == "character"
            else [label.name]
        )
        names = []
        for part in parts:
            clean = _clean(part, options)
            names.append(options.tag_replacement.get(part, options.tag_replacement.get(clean, clean)))
        out.append(names if label.category else [])
    return out


def mcut_threshold(scores: np.ndarray) -> float:
    """Maximum Cut Thresholding (Largeron et al. 2012): the midpoint of the largest gap between
    consecutive sorted scores."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(s) < 2:
        return float(s[0]) if len(s) else 1.0
    t = int(np.argmax(s[:-1] - s[1:]))
    return float((s[t] + s[t + 1]) / 2)


def _thresholds(
    scores: np.ndarray, by_category: dict[str, np.ndarray], options: TagOptions
) -> dict[str, float]:
    out = {}
    for category, idx in by_category.items():
        if options.mcut:
            t = mcut_threshold(scores[idx])
            out[category] = max(t, 0.15) if category == "character" else t
        else:
            out[category] = options.threshold(category)
    return out


def _by_category(labels: Sequence[Label]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label.category:
            groups.setdefault(label.category, []).append(i)
    return {c: np.asarray(v) for c, v in groups.items()}


class TagChooser:
    """Tags from scores under `options`, prepared once per tag list (caption names, categories,
    the names the model knows), so that a 10,000-tag list is not walked again for every image."""

    def __init__(self, labels: Sequence[Label], options: TagOptions, by_score: bool = False):
        self.labels, self.options = labels, options
        self.names = caption_names(labels, options)
        self.groups = _by_category(labels)
        self.known = {n for ns in self.names for n in ns}
        self.undesired = set(options.undesired_tags)
        self.by_score = options.sort_by_score if options.sort_by_score is not None else by_score

    def _tags_of(self, i: int, scores: np.ndarray) -> list[Tag]:
        label = self.labels[i]
        if label.name in self.undesired:
            return []
        return [Tag(n, float(scores[i]), label.category) for n in self.names[i] if n not in self.undesired]

    def __call__(self, scores: np.ndarray) -> list[Tag]:
        """The caption's tags from one image's scores, in order: the `always_first_tags`, the
        rating (with `use_rating_tags`), characters (with `character_tags_first`), the other tags
        found in the tag list's order (or by score)."""
        o = self.options
        limits = _thresholds(scores, self.groups, o)
        picked = {
            c: self._tags_of(int(idx[np.argmax(scores[idx])]), scores)
            for c, idx in self.groups.items()
            if c in PICK_ONE
        }
        found = [idx[scores[idx] >= limits[c]] for c, idx in self.groups.items() if c not in PICK_ONE]
        found = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        found = found[np.lexsort((found, -scores[found]))] if self.by_score else np.sort(found)
        body = [t for i in found for t in self._tags_of(int(i), scores)]
        if o.character_tags_first:
            body = [t for t in body if t.category == "character"] + [
                t for t in body if t.category != "character"
            ]
        front, back = [], []
        for category, first, last in (
            ("rating", o.use_rating_tags, o.use_rating_tags_as_last_tag),
            ("quality", o.use_quality_tags, o.use_quality_tags_as_last_tag),
        ):
            if first:
                front += picked.get(category, [])
            elif last:
                back = picked.get(category, []) + back
        return _trigger_first(front + body + back, o.always_first_tags, self.known)


def choose_tags(
    scores: np.ndarray, labels: Sequence[Label], options: TagOptions, by_score: bool = False
) -> list[Tag]:
    """The tags of one image's scores (see `TagChooser`; build one to tag many images)."""
    return TagChooser(labels, options, by_score)(scores)


def _trigger_first(tags: list[Tag], first: Sequence[str], known: set[str]) -> list[Tag]:
    """`first` in front, in the given order (those the model does not know always, the others
    where found); repeated tags removed."""
    if first:
        present = {t.name: t for t in tags}
        lead = [present.get(f) or Tag(f, 1.0, "trigger") for f in first if f in present or f not in known]
        tags = lead + tags
    seen, out = set(), []
    for t in tags:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out
