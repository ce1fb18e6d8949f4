"""The ways to teach a model, one `Method` per `training_type`: LoRA (with pivotal tuning),
DreamBooth (the whole model), textual inversion (a word) and A1111's hypernetworks. The recipe
asks its method what to build, at which learning rates, how its captions and steps differ and
what its files are called; the loop, previews, saving, resume and run record are shared."""

from .base import Method
from .dreambooth import DreamBoothMethod, FullModel
from .hypernetwork import HypernetworkMethod
from .lora import LoRAMethod, PivotalNetwork
from .textual_inversion import TextualInversionMethod

METHODS: dict[str, type[Method]] = {
    "lora": LoRAMethod,
    "dreambooth": DreamBoothMethod,
    "textual_inversion": TextualInversionMethod,
    "hypernetwork": HypernetworkMethod,
}


def method_for(config) -> Method:
    """The method of `config.training_type`."""
    return METHODS[config.training_type](config)


__all__ = [
    "METHODS",
    "DreamBoothMethod",
    "FullModel",
    "HypernetworkMethod",
    "LoRAMethod",
    "Method",
    "PivotalNetwork",
    "TextualInversionMethod",
    "method_for",
]
