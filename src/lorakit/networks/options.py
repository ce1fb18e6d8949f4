"""Network options named as sd-scripts and LyCORIS name them, so users' configs carry over.

`--network_module networks.lora|networks.dylora|lycoris.kohya` plus `--network_args k=v ...`
(`conv_dim=4`, `algo=loha`, `factor=8`, ...). Unknown arguments are an error, not ignored: a typo
in `conv_dim` would otherwise train a plain LoRA without a word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models.families import Family
from ..utils.keyvalue import parse_key_values
from .blocks import block_lr_weights, block_vector
from .errors import NetworkError

# Which clients load which algorithm (for --help and the README): diffusers' loader accepts only
# lora_down/lora_up/alpha (+dora_scale) and rejects a LoHa or LoKr file whole.
CLIENT_SUPPORT = {
    "lora": "A1111, ComfyUI, diffusers, kohya",
    "loha": "A1111 and ComfyUI (not diffusers' load_lora_weights)",
    "lokr": "A1111 and ComfyUI (not diffusers' load_lora_weights)",
}

MODULES = ("networks.lora", "networks.dylora", "lycoris.kohya")
ALGOS = ("lora", "locon", "loha", "lokr", "dylora")
UNSUPPORTED_ALGOS = ("glora", "ia3", "diag-oft", "boft", "full", "oft", "tlora")
PRESETS = ("attn-mlp", "full", "attn-only", "unet-only", "unet-transformer-only")

_COMMON = {
    "conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout",
    "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
    "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
}  # fmt: skip
_LYCORIS = {
    "algo", "preset", "factor", "decompose_both", "use_tucker", "use_cp", "use_conv_cp",
    "disable_conv_cp", "dora_wd", "wd_on_out", "block_size", "unit", "train_norm",
}  # fmt: skip
_DYLORA = {"unit"}
ALLOWED_ARGS = {
    "networks.lora": _COMMON | {"dora_wd", "wd_on_out", "use_tucker"},
    "networks.dylora": _COMMON | _DYLORA,
    "lycoris.kohya": _COMMON | _LYCORIS,
}


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "none", ""):
        return False
    raise NetworkError(f"network_args {name}={value!r}: expected true or false.")


def _number(value: Any, name: str, cast=float):
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError) as e:
        raise NetworkError(f"network_args {name}={value!r}: expected a number.") from e


def parse_network_args(args: Iterable[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """`["conv_dim=4", "algo=loha"]` (the command line form) or a dict, as strings."""
    return parse_key_values(args, "network_args", NetworkError)


@dataclass
class NetworkOptions:
    module: str = "networks.lora"
    algo: str = "lora"  # lora (incl. LoCon), loha, lokr; DyLoRA is lora with unit > 0
    dim: int = 4
    alpha: float = 1.0
    conv_dim: int | None = None
    conv_alpha: float | None = None
    dropout: float | None = None
    rank_dropout: float | None = None
    module_dropout: float | None = None
    block_dims: list[int] | None = None
    block_alphas: list[float] | None = None
    conv_block_dims: list[int] | None = None
    conv_block_alphas: list[float] | None = None
    block_lr_weight: list[float] | None = None
    loraplus_unet_lr_ratio: float | None = None
    loraplus_text_encoder_lr_ratio: float | None = None
    factor: int = -1
    decompose_both: bool = False
    use_tucker: bool = False
    dora_wd: bool = False
    wd_on_out: bool = True
    unit: int = 0
    preset: str = "attn-mlp"
    train_unet: bool = True
    train_text_encoder: bool = True
    args: dict[str, str] = field(default_factory=dict)  # as given, for ss_network_args

    @property
    def label(self) -> str:
        if self.unit:
            return "DyLoRA"
        name = {
            "lora": "LoCon" if self.conv_dim or self.conv_block_dims else "LoRA",
            "loha": "LoHa",
            "lokr": "LoKr",
        }[self.algo]
        return name + (" + DoRA" if self.dora_wd else "")


def network_options(
    family: Family,
    network_module: str = "networks.lora",
    network_dim: int | None = None,
    network_alpha: float | None = None,
    network_args: Iterable[str] | Mapping[str, Any] | None = None,
    network_dropout: float | None = None,
    train_unet_only: bool = False,
    train_text_encoder_only: bool = False,
) -> NetworkOptions:
    """Options from sd-scripts-style arguments, checked; errors name the argument and the fix."""
    if network_module not in MODULES:
        raise NetworkError(
            f"network_module {network_module!r} is not supported; use one of {', '.join(MODULES)} "
            "(LoHa/LoKr: lycoris.kohya with network_args algo=loha / algo=lokr)."
        )
    if train_unet_only and train_text_encoder_only:
        raise NetworkError("network_train_unet_only and network_train_text_encoder_only exclude each other.")
    args = parse_network_args(network_args)
    unknown = sorted(set(args) - ALLOWED_ARGS[network_module])
    if unknown:
        hint = " (LyCORIS arguments need network_module lycoris.kohya)" if set(unknown) & _LYCORIS else ""
        raise NetworkError(
            f"unknown network_args for {network_module}: {', '.join(unknown)}{hint}. "
            f"Known: {', '.join(sorted(ALLOWED_ARGS[network_module]))}."
        )
    dim = int(network_dim) if network_dim else 4  # sd-scripts' fallback
    alpha = float(network_alpha) if network_alpha is not None else 1.0
    opts = NetworkOptions(module=network_module, dim=dim, alpha=alpha, args=args)
    opts.train_unet = not train_text_encoder_only
    opts.train_text_encoder = not train_unet_only

    algo = args.get("algo", "lora").strip().lower()
    if network_module == "networks.dylora":
        algo = "dylora"
    if algo in UNSUPPORTED_ALGOS:
        raise NetworkError(
            f"algo={algo} is not supported by lorakit; use one of lora, locon, loha, lokr, dylora."
        )
    if algo not in ALGOS:
        raise NetworkError(f"algo={algo!r} is unknown; use one of {', '.join(ALGOS)}.")
    opts.algo = "lora" if algo in ("lora", "locon", "dylora") else algo
    if algo == "dylora":
        unit = args.get("unit", args.get("block_size", 1))
        opts.unit = _number(unit, "unit", int) or 1
        if dim % opts.unit:
            raise NetworkError(f"DyLoRA unit={opts.unit} must divide network_dim={dim}.")

    opts.conv_dim = _number(args.get("conv_dim"), "conv_dim", int) or None
    conv_alpha = _number(args.get("conv_alpha"), "conv_alpha")
    if opts.conv_dim:
        opts.conv_alpha = conv_alpha if conv_alpha is not None else 1.0
    if opts.unit and opts.conv_dim and opts.conv_dim != dim:
        raise NetworkError(
            f"DyLoRA needs conv_dim equal to network_dim ({dim}), got conv_dim={opts.conv_dim}."
        )

    opts.dropout = _number(network_dropout if network_dropout is not None else args.get("dropout"), "dropout")
    opts.rank_dropout = _number(args.get("rank_dropout"), "rank_dropout")
    opts.module_dropout = _number(args.get("module_dropout"), "module_dropout")
    for name in ("dropout", "rank_dropout", "module_dropout"):
        value = getattr(opts, name)
        if value is not None and not 0 <= value < 1:
            raise NetworkError(f"{name}={value} must be in [0, 1).")
    if opts.dropout and opts.algo != "lora":
        raise NetworkError(
            f"network dropout acts on LoRA's rank activations and has no meaning for {algo}; "
            "use rank_dropout or module_dropout."
        )

    opts.block_dims = block_vector(args.get("block_dims"), family, "block_dims", int)
    opts.block_alphas = block_vector(args.get("block_alphas"), family, "block_alphas")
    opts.conv_block_dims = block_vector(args.get("conv_block_dims"), family, "conv_block_dims", int)
    opts.conv_block_alphas = block_vector(args.get("conv_block_alphas"), family, "conv_block_alphas")
    threshold = _number(args.get("block_lr_zero_threshold"), "block_lr_zero_threshold") or 0.0
    opts.block_lr_weight = block_lr_weights(
        family, args.get("down_lr_weight"), args.get("mid_lr_weight"), args.get("up_lr_weight"), threshold
    )

    ratio = _number(args.get("loraplus_lr_ratio"), "loraplus_lr_ratio")
    unet_ratio = _number(args.get("loraplus_unet_lr_ratio"), "loraplus_unet_lr_ratio")
    te_ratio = _number(args.get("loraplus_text_encoder_lr_ratio"), "loraplus_text_encoder_lr_ratio")
    opts.loraplus_unet_lr_ratio = unet_ratio if unet_ratio is not None else ratio
    opts.loraplus_text_encoder_lr_ratio = te_ratio if te_ratio is not None else ratio

    opts.factor = _number(args.get("factor", -1), "factor", int)
    opts.decompose_both = _bool(args.get("decompose_both", False), "decompose_both")
    tucker = any(_bool(args.get(k, False), k) for k in ("use_tucker", "use_cp", "use_conv_cp"))
    opts.use_tucker = tucker and not _bool(args.get("disable_conv_cp", False), "disable_conv_cp")
    opts.dora_wd = _bool(args.get("dora_wd", False), "dora_wd")
    opts.wd_on_out = _bool(args.get("wd_on_out", True), "wd_on_out")
    if opts.dora_wd and opts.unit:
        raise NetworkError("DoRA (dora_wd) cannot be combined with DyLoRA.")
    if _bool(args.get("train_norm", False), "train_norm"):
        raise NetworkError("train_norm is not supported by lorakit; remove it from network_args.")
    opts.preset = args.get("preset", "attn-mlp").strip().lower()
    if opts.preset not in PRESETS:
        raise NetworkError(f"preset={opts.preset!r} is unknown; use one of {', '.join(PRESETS)}.")
    if opts.preset in ("unet-only", "unet-transformer-only"):
        opts.train_text_encoder = False
    return opts
