"""LoRA and its LyCORIS kin (the default method), optionally with pivotal tuning: new words'
embeddings trained together with the LoRA and stored inside its file as A1111's bundled
embeddings (`bundle_emb.WORD.string_to_param.*`, or `.clip_l` / `.clip_g` on SDXL)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...models.embedding_files import bundle_tensors, write_embedding
from ...networks.file import resolve_precision
from ...runs import RunFolder
from ..setup import build_network, prepare_training
from .base import Method
from .embeddings import TrainableEmbeddings


class LoRAMethod(Method):
    name = "lora"
    kind = "lora"

    def build(self, model, log):
        network = build_network(self.config, model, log)
        if not self.config.train_embeddings:
            return network
        c = self.config
        words = TrainableEmbeddings(model, c.train_embeddings, c.num_vectors_per_token, c.init_word)
        log(
            f"pivotal tuning: {', '.join(words.words)} trained with the LoRA ({c.num_vectors_per_token} "
            f"vector(s) each, starting from {repr(c.init_word) if c.init_word else 'their own tokens'})"
        )
        folder = RunFolder(Path(c.output_dir), c.output_name) if c.export_embeddings else None
        return PivotalNetwork(network, words, folder)

    def prepare(self, model, network) -> bool:
        if isinstance(network, PivotalNetwork):
            prepare_training(self.config, model, network.lora)
            return True  # gradients flow through the text encoders into the words' vectors
        return prepare_training(self.config, model, network)

    def param_groups(self, network) -> list[dict]:
        c = self.config
        if not isinstance(network, PivotalNetwork):
            return network.param_groups(c.unet_lr, c.text_encoder_lr, c.learning_rate)
        groups = network.lora.param_groups(c.unet_lr, c.text_encoder_lr, c.learning_rate)
        lr = c.embedding_lr if c.embedding_lr is not None else c.learning_rate
        return groups + [{"params": list(network.words.parameters()), "lr": lr, "name": "embeddings"}]

    def describe(self, network) -> str:
        lora = network.lora if isinstance(network, PivotalNetwork) else network
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        text = f"{lora.options.label}, {trainable:,} trainable parameters " + ", ".join(
            f"{n} {part}" for part, n in lora.counts().items()
        )
        if isinstance(network, PivotalNetwork):
            text += f", embeddings {', '.join(network.words.words)}"
        return text


class PivotalNetwork(nn.Module):
    """A LoRA network and the words trained with it; saved as one LoRA file."""

    kind = "lora"

    def __init__(self, lora, words: TrainableEmbeddings, export: RunFolder | None = None):
        super().__init__()
        self.lora = lora
        self.words = words
        self.export = export  # write each file's words as embedding files too

    @property
    def options(self):
        return self.lora.options

    @property
    def layers(self):
        return self.lora.layers

    def weight_problem(self) -> str | None:
        return self.lora.weight_problem() or self.words.weight_problem()

    def max_norm_(self, max_norm: float):
        return self.lora.max_norm_(max_norm)

    def save(self, path, metadata=None, precision=None, modelspec=None) -> Path:
        dtype = resolve_precision(precision) or torch.float32
        words = self.words.embeddings(step=int((metadata or {}).get("ss_steps", 0)) or None)
        bundled = {k: v for word in words for k, v in bundle_tensors(word, dtype).items()}
        meta = {**(metadata or {}), "ss_bundled_embeddings": ",".join(w.name for w in words)}
        path = self.lora.save(path, metadata=meta, precision=precision, modelspec=modelspec, extra=bundled)
        if self.export is not None:
            folder = self.export.embeddings_of(Path(path))
            for word in words:
                write_embedding(folder / f"{word.name}.safetensors", word, dtype)
        return path
