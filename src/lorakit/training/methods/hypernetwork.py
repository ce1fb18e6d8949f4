"""A1111's hypernetworks (its old Train tab, which kohya's tools dropped): small MLPs on the
input of every attention's keys and values (`networks.hypernetwork`), saved as A1111's `.pt`.
The text encoders stay frozen, so the captions can be cached."""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ...networks.errors import NetworkError
from ...networks.hypernetwork import Hypernetwork, HypernetworkOptions, attention_widths
from .base import Method
from .textual_inversion import short_hash


class HypernetworkMethod(Method):
    name = "hypernetwork"
    kind = "hypernetwork"

    @property
    def file_ext(self) -> str:
        return "pt"  # A1111 reads hypernetworks only as .pt

    def options(self) -> HypernetworkOptions:
        c = self.config
        structure = c.hypernetwork_layer_structure
        dropout = c.hypernetwork_dropout_structure
        structure = tuple(structure) if isinstance(structure, list) else (structure,)
        dropout = (tuple(dropout) if isinstance(dropout, list) else (dropout,)) if dropout else None
        try:
            return HypernetworkOptions(
                tuple(float(v) for v in structure), c.hypernetwork_activation_func, c.hypernetwork_weight_init,
                c.hypernetwork_layer_norm, c.hypernetwork_activate_output,
                dropout if dropout and any(dropout) else None,
            )  # fmt: skip
        except NetworkError as e:
            raise ConfigError(f"hypernetwork options: {e}") from None

    def preflight(self, facts) -> None:
        super().preflight(facts)
        self.options()

    def build(self, model, log):
        widths = attention_widths(model)
        sizes = [int(s) for s in self.config.hypernetwork_sizes] or widths
        unknown = sorted(set(sizes) - set(widths))
        if unknown:
            raise ConfigError(
                f"hypernetwork_sizes {unknown} are no attention width of this {model.family.label} model "
                f"(its widths: {', '.join(map(str, widths))}). Leave it empty for all of them."
            )
        net = Hypernetwork(sizes, self.options(), self.config.output_name).apply_to(model)
        net.sd_checkpoint = short_hash(str(self.config.pretrained_model_name_or_path))
        net.sd_checkpoint_name = Path(str(self.config.pretrained_model_name_or_path)).stem
        log(f"hypernetwork: widths {', '.join(map(str, sizes))}, layers {list(net.options.layer_structure)}")
        return net

    def prepare(self, model, network) -> bool:
        if self.config.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
        return False

    def describe(self, network) -> str:
        n = sum(p.numel() for p in network.parameters())
        return f"hypernetwork ({len(network.sizes)} widths x key and value), {n:,} trainable parameters"
