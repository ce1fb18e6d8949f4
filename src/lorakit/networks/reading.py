"""Reading the LoRA files users have: kohya/A1111 (any algorithm), diffusers, PEFT.

Every format is turned into one shape: module -> `ModuleWeights` (the algorithm, its tensors
under the kohya suffixes, alpha). Names are resolved against the model's layer index, and a name
that matches no layer is an error here, not a silent skip as in the clients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.checkpoint_file import TensorFile
from ..models.embedding_files import split_bundles
from ..models.embeddings import Embedding
from ..models.families import FAMILIES, SD1, SD2, SDXL, Family
from ..models.ldm.clip import canonical
from . import functional as fn
from .errors import NetworkError
from .naming import Layer, LayerIndex, full_size_index

LORA_KEYS = ("lora_down.weight", "lora_up.weight", "lora_mid.weight")
LOHA_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_KEYS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
KNOWN_SUFFIXES = set(LORA_KEYS + LOHA_KEYS + LOKR_KEYS + ("alpha", "dora_scale"))
UNSUPPORTED = {
    "oft_blocks": "OFT/BOFT",
    "oft_diag": "OFT",
    "a1.weight": "GLoRA",
    "diff": "full (diff)",
    "on_input": "IA3",
    "w_norm": "norm",
}
ALGO_LABELS = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}


@dataclass
class ModuleWeights:
    """One module of a file: tensors under kohya suffixes (`lora_down.weight`, `hada_w1_a`...)."""

    tensors: dict[str, torch.Tensor]
    alpha: float | None = None

    @property
    def algo(self) -> str:
        keys = self.tensors
        if "lora_down.weight" in keys:
            return "lora"
        if "hada_w1_a" in keys:
            return "loha"
        if "lokr_w1" in keys or "lokr_w1_a" in keys:
            return "lokr"
        raise NetworkError(f"unrecognised module tensors: {', '.join(sorted(keys))}")

    @property
    def dora_scale(self) -> torch.Tensor | None:
        return self.tensors.get("dora_scale")

    @property
    def rank(self) -> int | None:
        t = self.tensors
        algo = self.algo
        if algo == "lora":
            return t["lora_down.weight"].shape[0]
        if algo == "loha":
            return t["hada_w1_b"].shape[0]
        pair = t.get("lokr_w2_b", t.get("lokr_w1_b"))
        return None if pair is None else pair.shape[0]

    @property
    def is_conv_kxk(self) -> bool:
        t = self.tensors
        for key in ("lora_down.weight", "lora_mid.weight", "hada_t1", "lokr_t2", "lokr_w2"):
            if key in t and t[key].dim() == 4 and tuple(t[key].shape[2:]) != (1, 1):
                return True
        return False

    @property
    def scale(self) -> float:
        t = self.tensors
        algo = self.algo
        if algo == "lora":
            return fn.lora_scale(self.alpha, t["lora_down.weight"])
        if algo == "loha":
            return fn.loha_scale(self.alpha, t["hada_w1_b"])
        return fn.lokr_scale(self.alpha, t.get("lokr_w1_b"), t.get("lokr_w2_b"))

    def delta(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """ΔW·scale in `shape` (the layer's weight shape), without multiplier or DoRA."""
        t = {k: v.to(dtype) for k, v in self.tensors.items()}
        algo = self.algo
        if algo == "lora":
            d = fn.lora_delta(t["lora_up.weight"], t["lora_down.weight"], t.get("lora_mid.weight"), shape)
        elif algo == "loha":
            d = fn.loha_delta(
                t["hada_w1_a"],
                t["hada_w1_b"],
                t["hada_w2_a"],
                t["hada_w2_b"],
                t.get("hada_t1"),
                t.get("hada_t2"),
                shape,
            )
        else:
            d = fn.lokr_delta(
                t.get("lokr_w1"), t.get("lokr_w1_a"), t.get("lokr_w1_b"),
                t.get("lokr_w2"), t.get("lokr_w2_a"), t.get("lokr_w2_b"), t.get("lokr_t2"), shape,
            )  # fmt: skip
        return d * self.scale

    def merged_delta(self, weight: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What merging at strength 1 adds to `weight`: ΔW, or with DoRA m·(W+ΔW)/‖W+ΔW‖ − W."""
        delta = self.delta(weight.shape, dtype)
        if self.dora_scale is None:
            return delta
        w = weight.to(dtype)
        return fn.dora_weight(w, delta, self.dora_scale.to(dtype)) - w


@dataclass
class NetworkFile:
    """A LoRA/LyCORIS file in any format, modules keyed by sd-scripts name once resolved."""

    source: str
    format: str  # "kohya" | "diffusers" | "peft"
    modules: dict[str, ModuleWeights]
    metadata: dict[str, str] = field(default_factory=dict)
    family: Family | None = None
    layers: dict[str, Layer] = field(default_factory=dict)  # filled by `resolve`
    unmatched: list[str] = field(default_factory=list)
    embeddings: list[Embedding] = field(default_factory=list)  # bundled (A1111's bundle_emb.*)

    @property
    def algorithms(self) -> list[str]:
        return sorted({m.algo for m in self.modules.values()})

    def kohya_tensors(self) -> dict[str, torch.Tensor]:
        """The modules as a kohya state dict (file name + suffix -> tensor, alpha as 0-d)."""
        out = {}
        for name, module in self.modules.items():
            for suffix, tensor in module.tensors.items():
                out[f"{name}.{suffix}"] = tensor
            if module.alpha is not None:
                out[f"{name}.alpha"] = torch.tensor(module.alpha)
        return out

    def resolve(self, index: LayerIndex, strict: bool = True) -> NetworkFile:
        """Rename modules to sd-scripts names of `index` and attach their layers."""
        resolved: dict[str, ModuleWeights] = {}
        self.unmatched = []
        for name, module in self.modules.items():
            layer = _lookup(index, name, self.format)
            if layer is None:
                self.unmatched.append(name)
                continue
            resolved[layer.name] = module
            self.layers[layer.name] = layer
        if self.unmatched and strict:
            raise NetworkError(
                f"{self.source}: {len(self.unmatched)} of {len(self.modules)} modules match no layer of this "
                f"{index.family.label} model (first: {', '.join(self.unmatched[:3])}). The file is for another "
                "model architecture or uses names lorakit does not know; it would load with those layers "
                "silently unchanged elsewhere."
            )
        self.modules = resolved
        return self

    def check_shapes(self) -> None:
        for name, module in self.modules.items():
            layer = self.layers[name]
            try:
                delta = module.delta(layer.weight_shape)
            except RuntimeError as e:
                raise NetworkError(
                    f"{self.source}: module {name} does not fit layer {layer.path} of shape "
                    f"{layer.weight_shape} ({e}). The file was trained for a model of another size."
                ) from e
            del delta


def _lookup(index: LayerIndex, name: str, fmt: str) -> Layer | None:
    if fmt == "kohya":
        return index.get(name)
    part, _, path = name.partition(":")
    return index.by_path.get((part, path))


# ---- reading ------------------------------------------------------------------------------------


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata; pickle files go through lorakit's safe unpickler."""
    file = TensorFile(path)
    return {key: file[key] for key in file}, dict(file.metadata)


def detect_format(keys) -> str | None:
    """ "kohya", "diffusers", "peft", or None if these are not LoRA tensors."""
    keys = list(keys)
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(k.startswith("base_model.model.") and ".lora_" in k for k in keys):
        return "peft"
    markers = (".lora_A.", ".lora_B.", ".lora.down.", ".lora_linear_layer.", "_lora.down.")
    if any(any(m in k for m in markers) for k in keys):
        return "diffusers"
    return None


def is_network_file_keys(keys) -> bool:
    return detect_format(keys) is not None


def _group_kohya(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, ModuleWeights]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, suffix = key.partition(".")
        grouped.setdefault(name, {})[suffix] = tensor
    modules = {}
    for name, parts in grouped.items():
        unsupported = [label for marker, label in UNSUPPORTED.items() if marker in parts]
        if unsupported:
            raise NetworkError(
                f"{source}: module {name} is {unsupported[0]}, which lorakit does not read "
                "(it reads LoRA/LoCon, LoHa, LoKr, DyLoRA and DoRA)."
            )
        unknown = sorted(set(parts) - KNOWN_SUFFIXES)
        if unknown:
            raise NetworkError(f"{source}: module {name} has unknown tensors {', '.join(unknown)}.")
        alpha = parts.pop("alpha", None)
        modules[name] = ModuleWeights(parts, None if alpha is None else float(alpha.float().item()))
        modules[name].algo  # noqa: B018  (raises for a module without its main factors)
    return modules


_DIFFUSERS_SUFFIXES = [
    (".lora_A.weight", "lora_down.weight"),
    (".lora_B.weight", "lora_up.weight"),
    (".lora_A.default.weight", "lora_down.weight"),
    (".lora_B.default.weight", "lora_up.weight"),
    (".lora_linear_layer.down.weight", "lora_down.weight"),
    (".lora_linear_layer.up.weight", "lora_up.weight"),
    ("_lora.down.weight", "lora_down.weight"),
    ("_lora.up.weight", "lora_up.weight"),
    (".lora.down.weight", "lora_down.weight"),
    (".lora.up.weight", "lora_up.weight"),
    (".lora_magnitude_vector", "dora_scale"),
    (".lora_magnitude_vector.weight", "dora_scale"),
    (".alpha", "alpha"),
]
_PROCESSOR = [
    (".processor.to_q", ".to_q"), (".processor.to_k", ".to_k"), (".processor.to_v", ".to_v"),
    (".processor.to_out", ".to_out.0"), (".self_attn.to_q", ".self_attn.q_proj"),
    (".self_attn.to_k", ".self_attn.k_proj"), (".self_attn.to_v", ".self_attn.v_proj"),
    (".self_attn.to_out", ".self_attn.out_proj"),
]  # fmt: skip
_UNET_ROOTS = (
    "down_blocks.",
    "mid_block.",
    "up_blocks.",
    "conv_in",
    "conv_out",
    "time_embedding.",
    "add_embedding.",
)


def _split_suffix(name: str) -> tuple[str, str] | None:
    for ending, suffix in _DIFFUSERS_SUFFIXES:
        if name.endswith(ending):
            return name[: -len(ending)], suffix
    return None


def _split_part(path: str, default_text: str) -> tuple[str, str]:
    for part in ("unet", "text_encoder_2", "text_encoder"):
        if path.startswith(part + "."):
            return part, path[len(part) + 1 :]
    if path.startswith(_UNET_ROOTS):
        return "unet", path
    return default_text, path


def _alpha_for(path: str, part: str, config: Mapping | None, rank: int) -> float | None:
    """PEFT's alpha: alpha_pattern entry matching the module path, else lora_alpha; None if the
    file says nothing (then alpha = rank, scale 1)."""
    if not config:
        return None
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            return float(value)
    if config.get("lora_alpha") is not None:
        return float(config["lora_alpha"])
    return None


def _group_diffusers(
    tensors: Mapping[str, torch.Tensor], fmt: str, configs: Mapping[str, Mapping], default_text: str
) -> dict[str, ModuleWeights]:
    grouped: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix("base_model.model.")
        found = _split_suffix(name)
        if found is None:
            raise NetworkError(f"unrecognised tensor {key!r} in a {fmt}-format LoRA.")
        module_path, suffix = found
        for old, new in _PROCESSOR:  # the old attention-processor spelling
            if module_path.endswith(old):
                module_path = module_path[: -len(old)] + new
        part, path = _split_part(module_path, default_text)
        grouped.setdefault((part, canonical(path)), {})[suffix] = tensor
    modules = {}
    for (part, path), parts in grouped.items():
        alpha_t = parts.pop("alpha", None)
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise NetworkError(
                f"{part}.{path}: a LoRA module needs both lora_A (down) and lora_B (up) tensors."
            )
        rank = parts["lora_down.weight"].shape[0]
        alpha = (
            float(alpha_t.item()) if alpha_t is not None else _alpha_for(path, part, configs.get(part), rank)
        )
        if "dora_scale" in parts:  # PEFT's magnitude is one norm per output row
            parts["dora_scale"] = parts["dora_scale"].reshape(parts["lora_up.weight"].shape[0], 1)
        modules[f"{part}:{path}"] = ModuleWeights(parts, alpha)
    return modules


def _peft_configs(path: Path, metadata: Mapping[str, str], fmt: str, default_text: str) -> dict[str, dict]:
    """LoRA configs per component: diffusers' `lora_adapter_metadata`, or PEFT's adapter_config.json."""
    configs: dict[str, dict] = {}
    packed = metadata.get("lora_adapter_metadata")
    if packed:
        flat = json.loads(packed)
        for key, value in flat.items():
            part, _, field_name = key.partition(".")
            configs.setdefault(part, {})[field_name] = value
    if fmt == "peft":
        config_file = path.with_name("adapter_config.json")
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            for part in ("unet", "text_encoder", "text_encoder_2"):
                configs.setdefault(part, config)
    return configs


# ---- which family ------------------------------------------------------------------------------

_XL_KEYS = (
    "lora_te1_",
    "lora_te2_",
    "lora_unet_input_blocks_",
    "lora_unet_middle_block_",
    "lora_unet_output_blocks_",
)


def family_from_metadata(metadata: Mapping[str, str]) -> Family | None:
    version = metadata.get("ss_base_model_version", "")
    arch = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return SDXL
    if (
        version.startswith("sd_v2")
        or arch.startswith("stable-diffusion-v2")
        or metadata.get("ss_v2") == "True"
    ):
        return SD2
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return SD1
    return None


def family_from_modules(modules: Mapping[str, ModuleWeights]) -> Family | None:
    """SDXL from its names (te1/te2, SGM blocks, 10-layer transformers), SD1 vs SD2 from the
    cross-attention and text-encoder widths (768 vs 1024). None for sizes no real model has."""
    names = list(modules)
    if any(n.startswith(_XL_KEYS) or n.startswith("text_encoder_2:") for n in names):
        return SDXL
    if any(re.search(r"transformer_blocks[._][1-9]", n) for n in names):
        return SDXL
    for name, module in modules.items():
        width = None
        t = module.tensors
        if ("attn2_to_k" in name or "attn2.to_k" in name) and "lora_down.weight" in t:
            width = t["lora_down.weight"].shape[1]
            if width == 2048:
                return SDXL
        elif ("self_attn_q_proj" in name or "self_attn.q_proj" in name) and "lora_down.weight" in t:
            width = t["lora_down.weight"].shape[1]
        if width == 768:
            return SD1
        if width == 1024:
            return SD2
    return None


def wrong_family_message(source: str, file_family: Family, model_family: Family) -> str:
    return (
        f"{source}: this LoRA was trained for {file_family.label}; the model is {model_family.label}. "
        f"Load a {file_family.label} base model, or pick a LoRA made for {model_family.label}."
    )


def load_network(
    path: str | Path, model=None, family: Family | str | None = None, strict: bool = True
) -> NetworkFile:
    """Read a LoRA file of any supported format.

    With `model` (a StableDiffusionModel) the modules are resolved to its layers, a file for
    another family is an error, and so is a module that matches no layer (strict). Without a
    model, kohya names stay as they are and diffusers/PEFT modules keep `part:path` names.
    """
    path = Path(path)
    tensors, metadata = read_tensors(path)
    tensors, bundled = split_bundles(tensors, str(path))
    fmt = detect_format(tensors)
    if fmt is None:
        sample = ", ".join(list(tensors)[:3])
        raise NetworkError(
            f"{path} is not a LoRA/LyCORIS file (first keys: {sample}). lorakit reads kohya/A1111, "
            "diffusers and PEFT LoRA files."
        )
    default_text = "text_encoder_2" if "text_encoder_2" in path.name else "text_encoder"
    if fmt == "kohya":
        modules = _group_kohya(tensors, str(path))
    else:
        modules = _group_diffusers(
            tensors, fmt, _peft_configs(path, metadata, fmt, default_text), default_text
        )
    file_family = family_from_modules(modules) or family_from_metadata(metadata)
    if isinstance(family, str):
        family = FAMILIES[family]
    network = NetworkFile(str(path), fmt, modules, metadata, file_family or family, embeddings=bundled)
    if model is not None:
        if file_family is not None and file_family != model.family:
            raise NetworkError(wrong_family_message(str(path), file_family, model.family))
        network.family = model.family
        network.resolve(LayerIndex.for_model(model), strict=strict)
        network.check_shapes()
    elif fmt != "kohya" and network.family is not None:
        network.resolve(full_size_index(network.family.name), strict=False)
    return network
