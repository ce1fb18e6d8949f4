"""A trainable network for one model: which layers, which dims, parameter groups, the file.

This is what the training loop holds: `create_network(model, ...)` then `apply_to()`, then
`param_groups(...)` for the optimizer, and `save(path, metadata, precision)` at each checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import NetworkError
from .file import save_network_file
from .modules import MODULE_CLASSES, PLUS_PARAMS, NetworkModule
from .naming import Layer, LayerIndex
from .options import CLIENT_SUPPORT, NetworkOptions, network_options
from .reading import load_network

log = logging.getLogger(__name__)


def _selected(layer: Layer, opts: NetworkOptions) -> bool:
    if layer.part == "unet" and not opts.train_unet:
        return False
    if layer.part != "unet" and not opts.train_text_encoder:
        return False
    preset = opts.preset
    if layer.group == "text":
        return preset not in ("unet-only", "unet-transformer-only") and (
            preset != "attn-only" or ".self_attn." in layer.path
        )
    if layer.group == "attention":
        return preset != "attn-only" or any(f".{a}." in layer.path for a in ("attn1", "attn2"))
    if layer.group in ("conv", "extra"):
        conv_on = bool(opts.conv_dim or opts.conv_block_dims)
        if preset in ("full", "unet-only"):  # LyCORIS: Linear/1x1 always, kxk at conv_dim
            return conv_on or not layer.is_conv_kxk
        # sd-scripts adds the ResNet/sampler blocks (all their layers) only when conv_dim is set
        return preset == "attn-mlp" and layer.group == "conv" and conv_on
    return False


def _dim_alpha(layer: Layer, opts: NetworkOptions) -> tuple[int, float | None]:
    """sd-scripts' rule: Linear and 1x1 get network_dim, kxk convs conv_dim; block vectors
    override per block for U-Net layers inside a block; a block learning rate of 0 drops it."""
    kxk = layer.is_conv_kxk
    if layer.part == "unet" and layer.block >= 0:
        if opts.block_lr_weight is not None and opts.block_lr_weight[layer.block] == 0:
            return 0, None
        if kxk and opts.conv_block_dims is not None:
            alphas = opts.conv_block_alphas
            return opts.conv_block_dims[layer.block], alphas[layer.block] if alphas else (
                opts.conv_alpha or 1.0
            )
        if not kxk and opts.block_dims is not None:
            alphas = opts.block_alphas
            return opts.block_dims[layer.block], alphas[layer.block] if alphas else opts.alpha
    if kxk:
        return (opts.conv_dim or 0), opts.conv_alpha
    return opts.dim, opts.alpha


class LoRANetwork(nn.Module):
    """The modules of one network, keyed by their file names (so `state_dict()` is the file)."""

    kind = "lora"  # what a training run saves (the "what" of its events)

    def __init__(
        self,
        model,
        options: NetworkOptions,
        multiplier: float = 1.0,
        modules_dim: Mapping[str, tuple[int, float | None]] | None = None,
    ):
        """modules_dim: name -> (dim, alpha) for exactly these layers (a network shaped like a
        file, sd-scripts' `--dim_from_weights`); otherwise the options choose layers and dims."""
        super().__init__()
        self.options = options
        self.family = model.family
        self.model = [model]  # not a submodule
        self.index = LayerIndex.for_model(model)
        self.layers: dict[str, Layer] = {}
        self.multiplier = multiplier
        cls = MODULE_CLASSES[options.algo]
        extra: dict[str, Any] = {}
        if options.algo == "lora":
            extra = {"use_tucker": options.use_tucker, "unit": options.unit}
        elif options.algo == "loha":
            extra = {"use_tucker": options.use_tucker}
        elif options.algo == "lokr":
            extra = {
                "factor": options.factor,
                "decompose_both": options.decompose_both,
                "use_tucker": options.use_tucker,
            }
        for layer in self.index.layers.values():
            if modules_dim is not None:
                if layer.name not in modules_dim:
                    continue
                dim, alpha = modules_dim[layer.name]
            elif not _selected(layer, options):
                continue
            else:
                dim, alpha = _dim_alpha(layer, options)
            if not dim:
                continue
            module = cls(
                layer.name,
                layer.module,
                dim,
                alpha,
                multiplier=multiplier,
                dropout=options.dropout,
                rank_dropout=options.rank_dropout,
                module_dropout=options.module_dropout,
                dora_wd=options.dora_wd,
                wd_on_out=options.wd_on_out,
                **extra,
            )
            self.add_module(layer.name, module)
            self.layers[layer.name] = layer
        if not self.layers:
            raise NetworkError(
                "the network options select no layer at all (check network_train_unet_only / "
                "network_train_text_encoder_only, block_dims and the lr weights)."
            )
        counts = self.counts()
        log.info("%s: %s", options.label, ", ".join(f"{n} {part} modules" for part, n in counts.items()))
        if options.algo != "lora":
            log.info("%s files load in %s.", options.label, CLIENT_SUPPORT[options.algo])

    # ---- structure ------------------------------------------------------------------------

    def named_network_modules(self) -> Iterable[tuple[str, NetworkModule]]:
        return ((name, module) for name, module in self.named_children() if isinstance(module, NetworkModule))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.layers:
            part = self.layers[name].part
            out[part] = out.get(part, 0) + 1
        return out

    def apply_to(self) -> LoRANetwork:
        """Hook every module into its layer's forward. The base weights stay untouched."""
        for _, module in self.named_network_modules():
            module.apply_to()
        return self

    def remove(self) -> None:
        for _, module in self.named_network_modules():
            module.restore()

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for _, module in self.named_network_modules():
            module.multiplier = multiplier

    # ---- optimizer --------------------------------------------------------------------------

    def param_groups(
        self,
        unet_lr: float | None = None,
        text_encoder_lr: float | Iterable[float] | None = None,
        default_lr: float = 1e-4,
    ) -> list[dict[str, Any]]:
        """Optimizer groups: one per text encoder and one per U-Net block learning rate, each split
        in two with LoRA+ (the zero-initialised factor at lr x ratio). Groups at lr 0 are dropped
        (sd-scripts does not train them). Each group carries a "name" for the lr logs."""
        opts = self.options
        unet_lr = default_lr if unet_lr is None else unet_lr
        if text_encoder_lr is None or isinstance(text_encoder_lr, (int, float)):
            te_lrs = [default_lr if text_encoder_lr is None else float(text_encoder_lr)] * 2
        else:
            te_lrs = [float(v) for v in text_encoder_lr]
            te_lrs = te_lrs + [te_lrs[-1]] * (2 - len(te_lrs))
        buckets: dict[tuple[str, float, bool], list[nn.Parameter]] = {}
        for name, module in self.named_network_modules():
            layer = self.layers[name]
            if layer.part == "unet":
                lr = unet_lr
                key = "unet"
                if opts.block_lr_weight is not None and layer.block >= 0:
                    lr = unet_lr * opts.block_lr_weight[layer.block]
                    key = f"unet_block{layer.block:02d}"
                ratio = opts.loraplus_unet_lr_ratio
            else:
                index = 0 if layer.part == "text_encoder" else 1
                lr, key = te_lrs[index], ("textencoder" if index == 0 else "textencoder2")
                ratio = opts.loraplus_text_encoder_lr_ratio
            for pname, param in module.named_parameters():
                plus = ratio is not None and pname in PLUS_PARAMS
                buckets.setdefault((key, lr * (ratio if plus else 1.0), plus), []).append(param)
        groups = []
        for (key, lr, plus), params in buckets.items():
            if lr == 0:
                continue
            groups.append({"params": params, "lr": lr, "name": key + ("_plus" if plus else "")})
        return groups

    @torch.no_grad()
    def max_norm_(self, max_norm: float) -> tuple[int, float]:
        """sd-scripts' scale_weight_norms: shrink each module whose ΔW norm exceeds `max_norm`
        back to it. Returns (modules scaled, largest norm seen)."""
        scaled, largest = 0, 0.0
        for _, module in self.named_network_modules():
            norm = module.delta().norm().item()
            largest = max(largest, norm)
            if norm > max_norm:
                module.norm_factor().mul_(max_norm / norm)
                scaled += 1
        return scaled, largest

    @torch.no_grad()
    def weight_problem(self, limit: float = 1e3) -> str | None:
        """Why these weights cannot be a usable network, or None: a NaN/inf anywhere, or factor
        values beyond `limit` (a working LoRA's stay far below; blown-up runs reach 1e4 and more,
        which draws black or noise). DoRA magnitudes are the layer's own scale and not checked."""
        largest = 0.0
        for name, param in self.named_parameters():
            if not torch.isfinite(param).all():
                return f"{name} holds NaN or infinite values"
            if not name.endswith("dora_scale") and param.numel():
                largest = max(largest, param.detach().abs().max().item())
        if largest > limit:
            return f"its weights reach {largest:.3g} (a working network stays far below {limit:g})"
        return None

    # ---- weights and file ---------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors of the file, under the file's key names."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def deltas(self) -> dict[str, torch.Tensor]:
        """Each module's full merged delta at multiplier 1 (DoRA included), by file name."""
        with torch.no_grad():
            return {name: module.merged_delta() for name, module in self.named_network_modules()}

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Load a file (or state dict) into this network to continue training.

        Any format lorakit reads is accepted (kohya, diffusers, PEFT), converted to this network's
        names. Shapes must match (same dims and algorithm); returns the keys left unfilled.
        """
        if isinstance(source, Mapping):
            tensors = dict(source)
        else:
            tensors = load_network(source, model=self.model[0]).kohya_tensors()
        own = self.state_dict()
        unknown = sorted(set(tensors) - set(own))
        if unknown:
            raise NetworkError(
                f"{source if not isinstance(source, Mapping) else 'the weights'}: {len(unknown)} tensors have no "
                f"place in this network (first: {', '.join(unknown[:3])}). The file was trained with another "
                "algorithm or other target layers; use the same network_module / network_args."
            )
        for key, value in tensors.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise NetworkError(
                    f"{key}: the file has shape {tuple(value.shape)}, this network {tuple(own[key].shape)}. "
                    "Use the network_dim / conv_dim the file was trained with."
                )
        missing = sorted(set(own) - set(tensors))
        if strict and missing:
            raise NetworkError(
                f"the weights lack {len(missing)} tensors of this network (first: {', '.join(missing[:3])}); "
                "they were trained with fewer target layers. Pass strict=False to start those from scratch."
            )
        self.load_state_dict(tensors, strict=False)
        return missing

    def network_metadata(self) -> dict[str, str]:
        """The ss_* keys sd-scripts writes about the network itself."""
        opts = self.options
        model = self.model[0]
        module = opts.module
        return {
            "ss_network_module": module,
            "ss_network_dim": str(opts.dim),
            "ss_network_alpha": str(opts.alpha),
            "ss_network_dropout": str(opts.dropout),
            "ss_network_args": json.dumps(opts.args) if opts.args else "",
            "ss_base_model_version": model.base_model_version,
            "ss_v2": str(model.family.name == "sd2"),
        }

    def save(
        self,
        path: str | Path,
        metadata: Mapping[str, str] | None = None,
        precision: str | torch.dtype | None = None,
        modelspec: Mapping[str, str] | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write the kohya-format file (atomically) with ss_* metadata, modelspec and hashes.

        metadata: the training loop's ss_* keys (run, dataset, optimizer...); the network's own
        keys are filled in here. precision: "fp16" | "bf16" | "float" | a dtype | None (as trained).
        modelspec: overrides for modelspec.* (title, author, trigger_phrase...). extra: more
        tensors for the file (the `bundle_emb.*` embeddings of pivotal tuning).
        """
        if precision is None:  # as trained; alpha follows the factors, as in sd-scripts
            precision = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        meta = {**self.network_metadata(), **(metadata or {})}
        meta = {k: v for k, v in meta.items() if v != ""}
        return save_network_file(
            path, {**self.weights(), **(extra or {})}, meta, precision, model=self.model[0], modelspec=modelspec
        )


def create_network(
    model,
    network_module: str = "networks.lora",
    network_dim: int | None = None,
    network_alpha: float | None = None,
    network_args: Iterable[str] | Mapping[str, Any] | None = None,
    network_dropout: float | None = None,
    network_train_unet_only: bool = False,
    network_train_text_encoder_only: bool = False,
    multiplier: float = 1.0,
) -> LoRANetwork:
    """A network for `model` (a StableDiffusionModel) from sd-scripts-style options."""
    opts = network_options(
        model.family,
        network_module,
        network_dim,
        network_alpha,
        network_args,
        network_dropout,
        network_train_unet_only,
        network_train_text_encoder_only,
    )
    return LoRANetwork(model, opts, multiplier)


def create_network_from_weights(model, path: str | Path, multiplier: float = 1.0) -> LoRANetwork:
    """A network shaped like an existing file (its layers, dims, alphas, algorithm) with the file's
    weights loaded: sd-scripts' `--network_weights` with `--dim_from_weights`."""
    network_file = load_network(path, model=model)
    algos = network_file.algorithms
    if len(algos) != 1:
        raise NetworkError(
            f"{path} mixes algorithms ({', '.join(algos)}); lorakit trains one algorithm per network."
        )
    meta = network_file.metadata
    args: dict[str, Any] = {}
    try:
        args = json.loads(meta.get("ss_network_args") or "{}") or {}
    except ValueError:
        args = {}
    module = meta.get("ss_network_module", "")
    if algos[0] != "lora" or module == "lycoris.kohya":
        module = "lycoris.kohya"
        args.setdefault("algo", algos[0])
    elif module not in ("networks.lora", "networks.dylora"):
        module = "networks.lora"
    any_module = next(iter(network_file.modules.values()))
    args = {
        k: v
        for k, v in args.items()
        if k in ("algo", "factor", "decompose_both", "use_tucker", "unit", "wd_on_out")
    }
    if any(m.dora_scale is not None for m in network_file.modules.values()):
        args["dora_wd"] = "true"
    tucker_keys = ("lora_mid.weight", "hada_t1", "lokr_t2")
    if any(k in m.tensors for m in network_file.modules.values() for k in tucker_keys):
        args["use_tucker"] = "true"
        if module != "lycoris.kohya":
            module, args["algo"] = "lycoris.kohya", "locon"
    opts = network_options(model.family, module, any_module.rank or 1, any_module.alpha, args)
    dims = {}
    for name, weights in network_file.modules.items():
        rank = weights.rank
        if rank is None:  # LoKr with both factors full: the dim only decides the shapes
            rank = max(weights.tensors["lokr_w2"].shape[:2])
        dims[name] = (rank, weights.alpha)
    network = LoRANetwork(model, opts, multiplier, modules_dim=dims)
    network.load_weights(network_file.kohya_tensors())
    return network
