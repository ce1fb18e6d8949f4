"""What every training method answers for the recipe: what trains, at which learning rates, what
its file is called and how a step's captions and end differ. The loop itself is the same for all.

The object a method builds (`build`) is the run's "network": an nn.Module whose parameters train
and whose `save(path, metadata, precision, modelspec)`, `weight_problem()` and `state_dict()`
the saver, the collapse guard and the training states use, as they use a LoRA network's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...errors import ConfigError
from ...models.load import ModelFacts

# options that only LoRA networks read: set with another method they would be silently ignored
LORA_ONLY = ("scale_weight_norms", "network_weights", "dim_from_weights")


class Method:
    """The defaults: a method that trains `build()`'s parameters at `learning_rate`."""

    name = "lora"
    kind = "network"  # the "what" of its `saved` events and its files' word in messages

    def __init__(self, config):
        self.config = config

    @property
    def file_ext(self) -> str:
        """The suffix of its files in the run folder ("" for a folder)."""
        return "safetensors"

    def preflight(self, facts: ModelFacts) -> None:
        """Checks before the model loads (a mistake costs seconds, not a model load)."""
        config = self.config
        if config.fused_backward_pass and config.gradient_accumulation_steps > 1:
            raise ConfigError(
                "fused_backward_pass updates each weight as soon as its gradient is ready, so it cannot "
                "add up gradients of several batches: set gradient_accumulation_steps = 1."
            )
        if self.name != "lora":
            for name in LORA_ONLY:
                if config.values[name]:
                    raise ConfigError(
                        f"{name} is an option of LoRA networks; training_type = {self.name} does not use it."
                    )
            if config.train_embeddings:
                raise ConfigError(
                    "train_embeddings (pivotal tuning) trains words together with a LoRA: use it with "
                    'training_type = "lora". For a word alone use textual_inversion with token_string.'
                )

    def prepare_data(self, model, group, validation, resolution: int, seed: int, log):
        """The datasets to train on, once the model is loaded (DreamBooth adds class pictures)."""
        return group, validation

    def build(self, model, log) -> torch.nn.Module:
        raise NotImplementedError

    def prepare(self, model, network) -> bool:
        """Train modes and gradient checkpointing; whether gradients flow through the text encoders."""
        return False

    def param_groups(self, network) -> list[dict]:
        params = [p for p in network.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.config.learning_rate, "name": self.kind}]

    def describe(self, network) -> str:
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        return f"{self.kind}, {trainable:,} trainable parameters"

    def caption_transform(self) -> Callable[[list[str]], list[str]] | None:
        """A change to each batch's captions before they are encoded (textual inversion's templates)."""
        return None

    def at_step(self, step: int, ctx) -> None:
        """Where the run stands: called before the first step and after each optimizer step
        (DreamBooth's stop_text_encoder_training freezes the text encoders here)."""
