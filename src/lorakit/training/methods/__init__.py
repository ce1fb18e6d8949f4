"""The ways to teach a model, one `Method` per `training_type`: LoRA (with pivotal tuning),
DreamBooth (the whole model), textual inversion (a word) and A1111's hypernetworks. The recipe
asks its method what to build, at which learning rates, how its captions and steps differ and
what its files are called; the loop, previews, saving, resume and run record are shared."""

from .base import Method
from .lora import LoRAMethod, PivotalNetwork

METHODS: dict[str, type[Method]] = {"lora": LoRAMethod}


def method_for(config) -> Method:
    """The method of `config.training_type`."""
    return METHODS[config.training_type](config)


__all__ = ["METHODS", "LoRAMethod", "Method", "PivotalNetwork", "method_for"]
