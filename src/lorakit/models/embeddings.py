"""Textual-inversion embeddings inside a loaded model: words whose token vectors are given rather
than taken from the vocabulary (an A1111 embeddings folder, a textual-inversion run, the
embeddings bundled in a LoRA).

An embedding of n vectors gets n placeholder tokens in every tokenizer (the same ids in each:
SDXL's two tokenizers share CLIP's vocabulary) and n rows in every text encoder's token table.
Prompts and captions name it as A1111 does, by its name as a word in any case: before tokenizing,
each active name is replaced by its placeholders, so it takes n of the 75 tokens of a chunk and
everything else (emphasis, chunks, clip skip) works on it as on any word. A model without
embeddings tokenizes exactly as before.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import torch

from ..errors import ModelError

PLACEHOLDER = "<lorakit-emb-{}>"


@dataclass
class Embedding:
    """One word's vectors: one [n, width] tensor per text encoder (SDXL: CLIP-L, then OpenCLIP-G)."""

    name: str
    vectors: list[torch.Tensor]
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    source: str = ""

    @property
    def count(self) -> int:
        return int(self.vectors[0].shape[0])


@dataclass
class Slot:
    """Where a registered embedding lives: its placeholder tokens and their (contiguous) ids."""

    embedding: Embedding
    tokens: list[str]
    first_id: int

    @property
    def ids(self) -> range:
        return range(self.first_id, self.first_id + len(self.tokens))


@dataclass
class ModelEmbeddings:
    """The embeddings registered in one model, and which of them prompts may use now."""

    slots: dict[str, Slot] = field(default_factory=dict)  # by lower-case name
    active: set[str] = field(default_factory=set)
    _added: int = 0
    _pattern: re.Pattern | None = None

    def __bool__(self) -> bool:
        return bool(self.active)

    def add(self, model, embedding: Embedding, active: bool = True) -> Slot:
        """Register `embedding` in `model` (tokens and rows); a name registered before with as many
        vectors reuses its tokens, so loading the same file twice costs nothing."""
        check_widths(model, embedding)
        key = embedding.name.lower()
        slot = self.slots.get(key)
        if slot is None or len(slot.tokens) != embedding.count:
            tokens = [PLACEHOLDER.format(self._added + i) for i in range(embedding.count)]
            self._added += embedding.count
            first = None
            for tokenizer, encoder in zip(model.tokenizers, model.text_encoders):
                tokenizer.add_tokens(tokens)
                ids = tokenizer.convert_tokens_to_ids(tokens)
                if (first is not None and ids[0] != first) or ids != list(range(ids[0], ids[0] + len(ids))):
                    raise ModelError(
                        f"the tokenizers gave the embedding '{embedding.name}' different token ids"
                    )
                first = ids[0]
                if encoder.get_input_embeddings().num_embeddings < len(tokenizer):
                    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            slot = Slot(embedding, tokens, first)
            self.slots[key] = slot
        slot.embedding = embedding
        write_rows(model, slot)
        if active:
            self.activate(embedding.name)
        return slot

    def activate(self, name: str) -> None:
        self.active.add(name.lower())
        self._pattern = None

    def deactivate(self, name: str) -> None:
        self.active.discard(name.lower())
        self._pattern = None

    def rewrite(self, text: str) -> str:
        """`text` with each active embedding's name (a whole word, any case) replaced by its tokens."""
        if not self.active:
            return text
        if self._pattern is None:
            names = sorted(self.active, key=len, reverse=True)
            self._pattern = re.compile(
                r"(?<![\w])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])", re.IGNORECASE
            )
        return self._pattern.sub(lambda m: "".join(self.slots[m[1].lower()].tokens), text)

    def fingerprint(self) -> list[str]:
        """Changes when an active embedding or its vectors change (for caches of encoded captions)."""
        out = []
        for name in sorted(self.active):
            h = hashlib.sha256(name.encode())
            for v in self.slots[name].embedding.vectors:
                h.update(v.detach().float().cpu().numpy().tobytes())
            out.append(h.hexdigest()[:16])
        return out


def widths(model) -> list[int]:
    """The token width of each text encoder (768 SD1, 1024 SD2, 768 + 1280 SDXL)."""
    return [encoder.get_input_embeddings().embedding_dim for encoder in model.text_encoders]


def check_widths(model, embedding: Embedding) -> None:
    have = [int(v.shape[-1]) for v in embedding.vectors]
    want = widths(model)
    if have != want:
        raise ModelError(
            f"the embedding '{embedding.name}' has vectors of width {'+'.join(map(str, have))}, this "
            f"{model.family.label} model's text encoders take {'+'.join(map(str, want))}: it was made for "
            "another model family."
        )


@torch.no_grad()
def write_rows(model, slot: Slot) -> None:
    for encoder, vectors in zip(model.text_encoders, slot.embedding.vectors):
        table = encoder.get_input_embeddings().weight
        table[slot.first_id : slot.first_id + len(slot.tokens)] = vectors.to(table.device, table.dtype)


def token_rows(model, word: str, count: int) -> list[torch.Tensor]:
    """The vectors a new word starts from: the token vectors of `word` repeated in turn until
    there are `count` (sd-scripts' init_word rule), per text encoder."""
    ids = model.tokenizers[0](word, add_special_tokens=False).input_ids
    if not ids:
        raise ModelError(f"'{word}' has no tokens to start an embedding from; use a word such as 'shape'.")
    picks = [ids[i % len(ids)] for i in range(count)]
    return [encoder.get_input_embeddings().weight[picks].detach().clone() for encoder in model.text_encoders]


def substitute_rows(ids: torch.Tensor, embedded: torch.Tensor, first_id: int, vectors: torch.Tensor):
    """`embedded` (the token table's output for `ids`) with the rows of ids first_id ...
    first_id + n taken from `vectors` [n, width]: the only path gradients take into an embedding
    being trained, so the rest of the table never changes."""
    index = ids - first_id
    inside = (index >= 0) & (index < vectors.shape[0])
    if not bool(inside.any()):
        return embedded
    rows = vectors[index.clamp(0, vectors.shape[0] - 1)].to(embedded.dtype)
    return torch.where(inside[..., None], rows, embedded)
