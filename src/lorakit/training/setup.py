"""Setting up a run: accelerator, base model, datasets, network, from a TrainConfig."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .config import TrainConfig, network_args


class Runtime:
    """Where this process runs and with whom: accelerate's process state (set up by
    `accelerate launch` or `torchrun`), plus autocast for the chosen mixed precision. Kept explicit
    rather than a full `Accelerator`, whose process-wide state cannot change between runs in one
    process (the tests, a web UI) and whose model wrapping the hooked network does not need."""

    def __init__(self, mixed_precision: str):
        from accelerate import PartialState

        cuda = torch.cuda.is_available()
        if mixed_precision == "fp16" and not cuda:
            raise ConfigError(
                'mixed_precision = "fp16" needs an NVIDIA GPU. On a CPU use "bf16" (faster there) or "no".'
            )
        self.state = PartialState(cpu=not cuda)
        self.device = self.state.device
        self.process_index = self.state.process_index
        self.num_processes = self.state.num_processes
        self.is_main_process = self.state.is_main_process
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()


def make_accelerator(config: TrainConfig) -> Runtime:
    return Runtime(config.mixed_precision)


def weight_dtype(config: TrainConfig) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)


def load_base(config: TrainConfig, device, log):
    from ..models.load import load_model

    if not config.pretrained_model_name_or_path:
        raise ConfigError(
            "no base model: set pretrained_model_name_or_path (a .safetensors/.ckpt file or diffusers folder)."
        )
    model = load_model(
        config.pretrained_model_name_or_path,
        vae=config.vae,
        v_parameterization=True if config.v_parameterization else None,
        dtype=torch.float32,
    )
    if config.sdxl and not model.family.is_xl:
        raise ConfigError(
            f"sdxl = true, but {config.pretrained_model_name_or_path} is a {model.family.label} model."
        )
    dtype = weight_dtype(config)
    keep_vae_fp32 = config.no_half_vae or (model.family.is_xl and dtype == torch.float16)
    for name, module in model.components.items():
        module.requires_grad_(False).eval()
        wanted = torch.float32 if name == "vae" and keep_vae_fp32 else dtype
        module.to(device)
        if next(module.parameters()).dtype != wanted:
            module.to(wanted)
    log(f"model: {model.family.label}, {model.prediction_type} prediction, native {model.resolution}px")
    return model


def data_config(config: TrainConfig):
    """The sd-scripts dataset: a dataset TOML, the inline [general]/[[datasets]] tables, or folders."""
    from ..data import config_from_dict, config_from_folders
    from ..data import load_config as load_dataset_config

    options = dataset_options(config)
    if config.dataset_config:
        return load_dataset_config(config.dataset_config, defaults=options)
    if config.dataset is not None:
        base = config.path.parent if config.path else None
        return config_from_dict(config.dataset, options, source=str(config.path or "config"), base_dir=base)
    return config_from_folders(config.train_data_dir, config.reg_data_dir, config.in_json, options)


_DATASET_KEYS = (
    "caption_extension", "caption_separator", "shuffle_caption", "keep_tokens", "keep_tokens_separator",
    "secondary_separator", "enable_wildcard", "caption_prefix", "caption_suffix", "caption_dropout_rate",
    "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "token_warmup_min", "token_warmup_step",
    "color_aug", "flip_aug", "face_crop_aug_range", "random_crop", "resize_interpolation", "alpha_mask",
    "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
    "validation_split", "validation_seed",
)  # fmt: skip


def dataset_options(config: TrainConfig) -> dict:
    """Options set in the training config, as defaults below the dataset file's [general]."""
    options = {k: config.values[k] for k in _DATASET_KEYS if config.origin[k] != "default"}
    options["batch_size"] = config.train_batch_size
    if config.origin["resolution"] != "default":
        options["resolution"] = [int(v) for v in str(config.resolution).split(",")]
        if len(options["resolution"]) == 1:
            options["resolution"] = options["resolution"][0]
    if config.in_json:
        options["num_repeats"] = config.dataset_repeats
    return options


def build_data(config: TrainConfig, model, seed: int, log):
    from ..data import build_datasets

    data = data_config(config)
    group = build_datasets(
        data, resolution=model.resolution, prior_loss_weight=config.prior_loss_weight, seed=seed
    )
    validation = None
    if any(ds.validation_split for ds in data.datasets):
        validation = build_datasets(
            data, resolution=model.resolution, seed=seed, split="validation", strict=False
        )
        if validation.steps_per_epoch == 0:
            validation = None
    return group, validation


def merge_base_weights(config: TrainConfig, model, log) -> None:
    """sd-scripts' base_weights: LoRAs baked into the base model before training starts."""
    if not config.base_weights:
        return
    from ..networks import merge_networks

    multipliers = config.base_weights_multiplier or []
    if isinstance(multipliers, float):
        multipliers = [multipliers]
    specs = [
        (path, multipliers[i] if i < len(multipliers) else 1.0) for i, path in enumerate(config.base_weights)
    ]
    merge_networks(model, specs)
    log("merged into the base model: " + ", ".join(f"{p} x {m:g}" for p, m in specs))


def dim_alpha_from_weights(config: TrainConfig) -> tuple[int, float]:
    """network_dim and network_alpha read from network_weights (dim_from_weights = true)."""
    from ..networks import load_network

    file = load_network(config.network_weights)
    ranks = [w.rank for w in file.modules.values() if w.rank]
    alphas = [float(w.alpha) for w in file.modules.values() if getattr(w, "alpha", None) is not None]
    if not ranks:
        raise ConfigError(f"dim_from_weights: {config.network_weights} has no module with a rank to copy.")
    return max(ranks), (alphas[0] if alphas else float(max(ranks)))


def build_network(config: TrainConfig, model, log):
    from ..networks import create_network

    dim, alpha = config.network_dim, config.network_alpha
    if config.dim_from_weights:
        if not config.network_weights:
            raise ConfigError("dim_from_weights needs network_weights (the LoRA file to continue).")
        dim, alpha = dim_alpha_from_weights(config)
        log(f"network_dim {dim} and network_alpha {alpha:g} taken from {config.network_weights}")
    network = create_network(
        model,
        network_module=config.network_module,
        network_dim=dim,
        network_alpha=alpha,
        network_args=network_args(config),
        network_dropout=config.network_dropout,
        network_train_unet_only=config.network_train_unet_only,
        network_train_text_encoder_only=config.network_train_text_encoder_only,
    )
    if config.network_weights:
        missing = network.load_weights(config.network_weights, strict=False)
        log(
            f"continuing from {config.network_weights}"
            + (f" ({len(missing)} new tensors)" if missing else "")
        )
    network.apply_to()
    return network
