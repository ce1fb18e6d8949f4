"""Which layers a network may hook, and the sd-scripts name each one has in a file.

A file names a layer `lora_unet_<path>` / `lora_te[1|2]_<path>` with dots as underscores, and the
clients only patch layers whose names match exactly. The path is:
- SD1/SD2 U-Net: the diffusers path (`down_blocks_0_attentions_0_...`), as sd-scripts' SD1 U-Net
  uses diffusers' module names;
- SDXL U-Net: the original SGM path (`input_blocks_4_1_...`), as sd-scripts trains SDXL on its
  own copy of the SGM U-Net, and A1111 reads only that spelling for SDXL;
- text encoders: `text_model_encoder_layers_N_...`, whatever transformers version is installed.

Names cannot be split back on `_` (module names contain underscores), so reading goes through an
index of every layer of the model, as the clients do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from ..models.families import FAMILIES, Family
from ..models.ldm.clip import canonical
from ..models.ldm.unet import ldm_name

# sd-scripts' target containers (networks/lora.py)
UNET_ATTENTION_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
# LyCORIS' `full` preset adds these U-Net layers outside the blocks
UNET_EXTRA_LAYERS = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2")


@dataclass(frozen=True, eq=False)
class Layer:
    """One Linear or Conv2d that a network can hook."""

    name: str  # the sd-scripts name, `lora_unet_...`
    part: str  # "unet", "text_encoder", "text_encoder_2"
    path: str  # module path inside its component (diffusers/transformers, without `text_model.`)
    module: nn.Module
    group: str  # "attention" (default targets), "conv" (with conv_dim), "text", "extra", "other"
    block: int  # sd-scripts block index for block_dims / lr weights; -1 outside the U-Net blocks
    lbw: str  # A1111 LoRA Block Weight id: BASE, IN00..IN11, M00, OUT00..OUT11; "" if none

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.module.kernel_size) if self.is_conv else (1, 1)

    @property
    def is_conv_kxk(self) -> bool:
        """3x3 (or larger) convs get `conv_dim`; Linear and 1x1 convs get `network_dim`."""
        return self.is_conv and self.kernel != (1, 1)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)


def text_prefix(family: Family, index: int) -> str:
    return f"lora_te{index + 1}_" if family.is_xl else "lora_te_"


def unet_name(path: str, family: Family, config) -> str:
    if family.is_xl:
        return "lora_unet_" + ldm_name(path + ".weight", config).removesuffix(".weight").replace(".", "_")
    return "lora_unet_" + path.replace(".", "_")


def text_name(path: str, family: Family, index: int) -> str:
    return text_prefix(family, index) + "text_model_" + canonical(path).replace(".", "_")


_BLOCK = re.compile(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.")


def block_index(ldm: str, family: Family) -> int:
    """sd-scripts' `get_block_index`: SD1/2 0..24 (12 in, mid, 12 out), SDXL 0..22 (emb, 9 in,
    3 mid, 9 out, out); -1 for layers no block vector covers."""
    m = _BLOCK.match(ldm)
    if family.is_xl:
        if ldm.startswith(("time_embed.", "label_emb.")):
            return 0
        if ldm.startswith("out."):
            return 22
        if not m:
            return -1
        n = int(m[2])
        return {"input_blocks": 1 + n, "middle_block": 10 + n, "output_blocks": 13 + n}[m[1]]
    if not m:
        return -1
    n = int(m[2])
    if m[1] == "input_blocks":
        return n if n > 0 else -1  # conv_in (input_blocks.0) has no block entry in sd-scripts
    if m[1] == "middle_block":
        return 12
    return 13 + n


def lbw_block(ldm: str) -> str:
    m = _BLOCK.match(ldm)
    if not m:
        return ""
    if m[1] == "middle_block":
        return "M00"
    return ("IN" if m[1] == "input_blocks" else "OUT") + f"{int(m[2]):02d}"


def _containers(root: nn.Module, classes: tuple[str, ...]) -> dict[int, str]:
    """id(layer) -> container class for every Linear/Conv2d inside a module of `classes`."""
    found: dict[int, str] = {}
    for _, module in root.named_modules():
        cls = type(module).__name__
        if cls in classes:
            for child in module.modules():
                if isinstance(child, (nn.Linear, nn.Conv2d)):
                    found.setdefault(id(child), cls)
    return found


class LayerIndex:
    """Every hookable layer of a model, by sd-scripts name, with the aliases other tools write."""

    def __init__(self, family: Family, unet: nn.Module | None, text_encoders: list[nn.Module]):
        self.family = family
        self.layers: dict[str, Layer] = {}
        self.aliases: dict[str, str] = {}
        self.by_path: dict[tuple[str, str], Layer] = {}
        if unet is not None:
            self._add_unet(unet)
        for i, encoder in enumerate(text_encoders):
            self._add_text(encoder, i)

    def _add(self, layer: Layer) -> None:
        self.layers[layer.name] = layer
        self.by_path[(layer.part, layer.path)] = layer

    def _add_unet(self, unet: nn.Module) -> None:
        attention = _containers(unet, UNET_ATTENTION_BLOCKS)
        conv = _containers(unet, UNET_CONV_BLOCKS)
        config = unet.config
        for path, module in unet.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            try:
                ldm = ldm_name(path + ".weight", config).removesuffix(".weight")
            except KeyError:
                ldm = ""
            if id(module) in attention:
                group = "attention"
            elif id(module) in conv:
                group = "conv"
            elif path in UNET_EXTRA_LAYERS:
                group = "extra"
            else:
                group = "other"
            name = unet_name(path, self.family, config)
            self._add(Layer(name, "unet", path, module, group, block_index(ldm, self.family), lbw_block(ldm)))
            if self.family.is_xl:  # some tools write diffusers-style names for SDXL too
                self.aliases["lora_unet_" + path.replace(".", "_")] = name

    def _add_text(self, encoder: nn.Module, index: int) -> None:
        text = _containers(encoder, TEXT_BLOCKS)
        part = "text_encoder" if index == 0 else f"text_encoder_{index + 1}"
        for path, module in encoder.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            path = canonical(path)
            group = "text" if id(module) in text else "other"
            self._add(Layer(text_name(path, self.family, index), part, path, module, group, -1, "BASE"))

    def get(self, name: str) -> Layer | None:
        layer = self.layers.get(name)
        if layer is None and name in self.aliases:
            layer = self.layers[self.aliases[name]]
        return layer

    def default_targets(self) -> list[Layer]:
        return [layer for layer in self.layers.values() if layer.group in ("attention", "text")]

    @classmethod
    def for_model(cls, model) -> LayerIndex:
        return cls(model.family, model.unet, list(model.text_encoders))


@cache
def full_size_index(family_name: str) -> LayerIndex:
    """The index of a full-size model of a family, built on the meta device (no weights
    allocated): what `inspect` resolves names against when no model is loaded."""
    from accelerate import init_empty_weights  # noqa: PLC0415
    from diffusers import UNet2DConditionModel  # noqa: PLC0415
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    family = FAMILIES[family_name]
    with init_empty_weights(), torch.device("meta"):
        unet = UNet2DConditionModel.from_config(family.config("unet"))
        encoders: list[nn.Module] = [CLIPTextModel(CLIPTextConfig(**family.config("text_encoder")))]
        if family.is_xl:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**family.config("text_encoder_2"))))
    return LayerIndex(family, unet, encoders)
