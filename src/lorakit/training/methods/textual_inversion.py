"""Textual inversion (sd-scripts' `train_textual_inversion.py`): one new word, `token_string`,
whose `num_vectors_per_token` vectors start from `init_word`'s and are the only thing that
trains. The file is the word's embedding, named after the word, in the layout A1111, ComfyUI and
diffusers load (`models.embedding_files`); the base model is not changed at all.
"""

from __future__ import annotations

import random
import re
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError
from ...models.embedding_files import write_embedding
from ...networks.file import modelspec_metadata, resolve_precision
from ...utils.files import a1111_hashes
from .base import Method
from .embeddings import DEFAULT_INIT, TrainableEmbeddings

# sd-scripts' (from the textual-inversion paper's code) caption templates
OBJECT_TEMPLATES = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
]  # fmt: skip
STYLE_TEMPLATES = [
    "a painting in the style of {}", "a rendering in the style of {}",
    "a cropped painting in the style of {}", "the painting in the style of {}",
    "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}",
    "a cool painting in the style of {}", "a close-up painting in the style of {}",
    "a bright painting in the style of {}", "a cropped painting in the style of {}",
    "a good painting in the style of {}", "a close-up painting in the style of {}",
    "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
]  # fmt: skip


@cache
def short_hash(path: str) -> str | None:
    """A1111's short model hash (what its embedding and hypernetwork files record as sd_checkpoint)."""
    return a1111_hashes(path)["short_hash"] if Path(path).is_file() else None


def has_word(caption: str | None, word: str) -> bool:
    return bool(re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", caption or "", re.IGNORECASE))


class TextualInversionMethod(Method):
    name = "textual_inversion"
    kind = "embedding"

    @property
    def file_ext(self) -> str:
        return "pt" if self.config.save_model_as == "pt" else "safetensors"

    def preflight(self, facts) -> None:
        super().preflight(facts)
        c = self.config
        if not c.token_string:
            raise ConfigError(
                "training_type = textual_inversion needs token_string: the new word to train (e.g. ohwx), "
                "used in the captions and later in prompts."
            )
        if c.use_object_template and c.use_style_template:
            raise ConfigError(
                "use_object_template and use_style_template exclude each other: set one of them."
            )
        if c.cache_text_encoder_outputs or c.cache_text_encoder_outputs_to_disk:
            raise ConfigError(
                "textual inversion trains through the text encoder, so its outputs cannot be cached: remove "
                "cache_text_encoder_outputs."
            )

    def prepare_data(self, model, group, validation, resolution, seed, log):
        if self.templates:
            return group, validation
        word = self.config.token_string
        captions = [r.caption for _, _, r in group.records() if not r.is_reg]
        found = sum(has_word(c, word) for c in captions)
        if not found:
            raise ConfigError(
                f"no caption contains the word '{word}' (token_string), so its embedding would learn nothing. "
                "Put it in the captions (e.g. 'ohwx, a photo'), or set use_object_template / use_style_template."
            )
        if found < len(captions):
            log(
                f"note: {len(captions) - found} of {len(captions)} captions lack '{word}'; they teach it nothing."
            )
        return group, validation

    def build(self, model, log):
        c = self.config
        words = TrainableEmbeddings(
            model, [c.token_string], c.num_vectors_per_token, c.init_word or DEFAULT_INIT
        )
        log(
            f"textual inversion: '{c.token_string}', {c.num_vectors_per_token} vector(s) starting from "
            f"'{c.init_word or DEFAULT_INIT}'; the model itself stays as it is"
        )
        return EmbeddingFile(model, words, str(c.pretrained_model_name_or_path))

    def prepare(self, model, network) -> bool:
        if self.config.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                encoder.train()
        return True  # gradients flow through the (frozen) text encoders into the word's vectors

    @property
    def templates(self) -> list[str] | None:
        c = self.config
        return (
            OBJECT_TEMPLATES if c.use_object_template else STYLE_TEMPLATES if c.use_style_template else None
        )

    def caption_transform(self):
        templates, word = self.templates, self.config.token_string
        if templates is None:
            return None
        return lambda captions: [random.choice(templates).format(word) for _ in captions]

    def describe(self, network) -> str:
        n = sum(p.numel() for p in network.parameters())
        return f"textual inversion '{self.config.token_string}', {n:,} trainable values (the word's vectors)"


class EmbeddingFile(nn.Module):
    """The trainable of a textual-inversion run: its word, saved as an embedding file."""

    kind = "embedding"

    def __init__(self, model, words: TrainableEmbeddings, base: str):
        super().__init__()
        self.words = words
        self.model = [model]
        self.base = base

    def weight_problem(self) -> str | None:
        return self.words.weight_problem()

    def save(self, path, metadata=None, precision=None, modelspec=None) -> Path:
        metadata = dict(metadata or {})
        embedding = self.words.embeddings(step=int(metadata.get("ss_steps", 0)) or None)[0]
        embedding.sd_checkpoint = short_hash(self.base)
        embedding.sd_checkpoint_name = Path(self.base).stem
        model = self.model[0]
        spec = modelspec_metadata(model, metadata, modelspec)
        spec["modelspec.architecture"] = f"{model.architecture}/textual-inversion"
        dtype = resolve_precision(precision) or torch.float32
        return write_embedding(path, embedding, dtype, metadata={**metadata, **spec})
