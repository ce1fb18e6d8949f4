"""Text-encoder outputs kept per caption while the text encoders are frozen.

The data layer does not know how to run the text encoders (tokenizer, clip skip and token length
belong to the model): the caller passes `encode(captions) -> {name: tensor with batch first}` and
an `encoder_id` string that changes whenever the encoders or those settings change.

Two ways to fill the cache, one lookup:
- as the batches come (`lookup` encodes the captions it has not seen, together, and keeps them,
  bounded): always safe, also when captions change from step to step;
- up front (`prefill`, sd-scripts' `cache_text_encoder_outputs`): every caption once, in memory
  or, with `to_disk` (`cache_text_encoder_outputs_to_disk`), in sd-scripts' `<img>_te_outputs.npz`
  beside each image (its SDXL keys are hidden_state1, hidden_state2 and pool2), with a
  `lorakit_key` that ties the file to the caption and the encoders, so a later run reads it
  instead of encoding. Only for captions that are the same at every step.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ..utils.files import atomic_path
from .captions import process_caption
from .dataset import DatasetGroup
from .latent_cache import CacheStats

KEY_NAME = "lorakit_key"

Encode = Callable[[list[str]], dict[str, torch.Tensor]]


@dataclass
class _OnDisk:
    path: Path

    def load(self) -> dict[str, torch.Tensor]:
        with np.load(self.path, allow_pickle=False) as f:
            return {k: torch.from_numpy(f[k]) for k in f.files if k != KEY_NAME}


class TextOutputCache:
    """caption -> the encoders' outputs for it (one row each, batch axis removed)."""

    def __init__(self, encode: Encode, encoder_id: str, size: int | None = 4096):
        """`size` bounds the captions kept by `lookup` (oldest dropped first); None: no bound."""
        self.encode, self.encoder_id, self.size = encode, encoder_id, size
        self.items: OrderedDict[str, dict[str, torch.Tensor] | _OnDisk] = OrderedDict()
        self.hits = 0
        self.encoded = 0
        self.prefilled = False

    def lookup(self, captions: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The outputs of `captions`, stacked batch first; captions not seen before are encoded
        in one call of `encode`."""
        missing = [c for c in dict.fromkeys(captions) if c not in self.items]
        if missing:
            if self.prefilled:
                raise DatasetError(
                    f"caption {missing[0]!r} was not in the text-encoder cache made before training; "
                    "captions changed after caching."
                )
            with torch.no_grad():
                outputs = self.encode(missing)
            self.encoded += len(missing)
            for i, caption in enumerate(missing):
                self._put(caption, {name: t[i] for name, t in outputs.items()})
        rows = []
        for caption in captions:
            item = self.items[caption]
            if caption not in missing:
                self.hits += 1
            self.items.move_to_end(caption)
            rows.append(item.load() if isinstance(item, _OnDisk) else item)
        return {name: torch.stack([r[name] for r in rows]).to(device or rows[0][name].device) for name in rows[0]}

    def _put(self, caption: str, value) -> None:
        self.items[caption] = value
        if self.size is not None and not self.prefilled and len(self.items) > self.size:
            self.items.popitem(last=False)

    def prefill(self, group: DatasetGroup, *, to_disk: bool = False, batch_size: int = 8) -> CacheStats:
        """Encode every caption of `group` once, before training (files reused with `to_disk`)."""
        changing = changing_caption_options(group)
        if changing:
            raise DatasetError(
                "text-encoder outputs can be cached only when every caption stays the same; these "
                "options change captions at each step:\n  " + "\n  ".join(changing) + "\nTurn them off, "
                "or do not cache text-encoder outputs (cache_text_encoder_outputs = false)."
            )
        stats = CacheStats()
        wanted: dict[str, list[tuple[Path | None, str]]] = {}
        for d, i, r in group.records():
            caption = static_caption(group, d, i)
            key = hashlib.sha256(f"{self.encoder_id}\n{caption}".encode()).hexdigest()
            path = te_npz_path(r.path) if to_disk else None
            if path is not None and _valid(path, key):
                self.items[caption] = _OnDisk(path)
                stats.reused += 1
                continue
            wanted.setdefault(caption, []).append((path, key))
        captions = list(wanted)
        for k in range(0, len(captions), batch_size):
            chunk = captions[k : k + batch_size]
            with torch.no_grad():
                outputs = self.encode(chunk)
            for j, caption in enumerate(chunk):
                row = {name: t[j].detach().float().cpu() for name, t in outputs.items()}
                stats.encoded += 1
                self.items[caption] = row
                for path, key in wanted[caption]:
                    if path is None:
                        continue
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.savez(f, **{n: t.numpy() for n, t in row.items()}, **{KEY_NAME: np.array(key)})
                    stats.written += 1
                    self.items[caption] = _OnDisk(path)
        self.encoded += stats.encoded
        self.prefilled = True
        return stats


def te_npz_path(image: Path) -> Path:
    return image.with_name(image.stem + "_te_outputs.npz")


def changing_caption_options(group: DatasetGroup) -> list[str]:
    """Subsets whose captions can differ from step to step, with the options responsible."""
    out = []
    for ds in group.datasets:
        for s in ds.config.subsets:
            opts = [
                name
                for name, on in (
                    ("shuffle_caption", s.shuffle_caption),
                    ("caption_dropout_rate", s.caption_dropout_rate > 0),
                    ("caption_dropout_every_n_epochs", s.caption_dropout_every_n_epochs > 0),
                    ("caption_tag_dropout_rate", s.caption_tag_dropout_rate > 0),
                    ("token_warmup_step", s.token_warmup_step > 0),
                    ("enable_wildcard", s.enable_wildcard),
                )
                if on
            ]
            if opts:
                out.append(f"{s.name}: {', '.join(opts)}")
    return out


def static_caption(group: DatasetGroup, d: int, i: int) -> str:
    record = group.datasets[d].records[i]
    return process_caption(record.caption, record.subset, random.Random(0))


def _valid(path: Path, key: str) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            return KEY_NAME in f.files and str(f[KEY_NAME]) == key
    except Exception:  # a damaged or foreign file is simply encoded again
        return False
