"""Setting up a run from its TrainConfig: where it runs, the base model, the datasets, the
network, the caption cache. The recipe calls these in order; each reads the options it needs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from accelerate import PartialState

from ..data import build_datasets, config_from_dict, config_from_folders
from ..data import load_config as load_dataset_config
from ..data.config import SubsetConfig
from ..data.latent_cache import cache_latents, check_cacheable, module_fingerprint
from ..data.schema import options_for_dataset
from ..data.text_cache import TextOutputCache
from ..errors import ConfigError
from ..evaluation.prompts import load_prompts
from ..models.embedding_files import load_folder
from ..models.load import ModelFacts, load_model, model_facts
from ..networks import create_network, create_network_from_weights, merge_networks, network_options
from .config import TrainConfig, network_args
from .step import TextOptions, text_outputs


class Runtime:
    """Where this process runs and with whom: accelerate's process state (set up by
    `accelerate launch` or `torchrun`), plus autocast for the chosen mixed precision. Kept explicit
    rather than a full `Accelerator`, whose process-wide state cannot change between runs in one
    process (the tests, a web UI) and whose model wrapping the hooked network does not need."""

    def __init__(self, mixed_precision: str):
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

    @classmethod
    def from_config(cls, config: TrainConfig) -> Runtime:
        return cls(config.mixed_precision)

    @property
    def shard(self) -> tuple[int, int]:
        """(this process, all processes): each trains every n-th batch of an epoch."""
        return self.process_index, self.num_processes

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()


def weight_dtype(config: TrainConfig) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)


def preflight(config: TrainConfig) -> ModelFacts:
    """Everything that can be checked before the slow model load: the model file's header, the
    network options for its family, the files the config names, options that exclude each other.
    A mistake found here costs the user seconds, not the minutes of a model load."""
    if not config.pretrained_model_name_or_path:
        raise ConfigError(
            "no base model: set pretrained_model_name_or_path (a .safetensors/.ckpt file or diffusers folder)."
        )
    facts = model_facts(config.pretrained_model_name_or_path, True if config.v_parameterization else None)
    if config.sdxl and not facts.family.is_xl:
        raise ConfigError(
            f"sdxl = true, but {config.pretrained_model_name_or_path} is a {facts.family.label} model."
        )
    for name in ("vae", "network_weights", "sample_prompts", "dataset_config", "in_json"):
        value = config.values[name]
        if value and not Path(value).exists():
            raise ConfigError(f"{name} = {value!r}: no such file or folder.")
    for path in config.base_weights:
        if not Path(path).exists():
            raise ConfigError(f"base_weights: {path!r}: no such file.")
    if not config.dim_from_weights and config.training_type == "lora":
        options = network_options(
            facts.family, config.network_module, config.network_dim, config.network_alpha, network_args(config),
            config.network_dropout, config.network_train_unet_only, config.network_train_text_encoder_only,
        )  # fmt: skip
        if options.train_text_encoder and (
            config.cache_text_encoder_outputs or config.cache_text_encoder_outputs_to_disk
        ):
            raise ConfigError(CACHE_NEEDS_FROZEN)
    if config.sample_prompts:
        load_prompts(Path(config.sample_prompts))
    return facts


CACHE_NEEDS_FROZEN = (
    "cache_text_encoder_outputs needs frozen text encoders, but the network trains them. Set "
    "network_train_unet_only = true, or remove cache_text_encoder_outputs."
)


def load_base(config: TrainConfig, device, log):
    """The frozen base model, read straight into the weight dtype (the VAE in float32 where
    half precision would break it): no float32 copy is made first."""
    dtype = weight_dtype(config)
    xl = model_facts(config.pretrained_model_name_or_path).family.is_xl  # the header only
    vae_dtype = torch.float32 if config.no_half_vae or (xl and dtype == torch.float16) else dtype
    model = load_model(
        config.pretrained_model_name_or_path,
        vae=config.vae,
        v_parameterization=True if config.v_parameterization else None,
        dtype=dtype,
        vae_dtype=vae_dtype,
    )
    keep_vae_fp32 = config.no_half_vae or (model.family.is_xl and dtype == torch.float16)
    for name, module in model.components.items():
        module.requires_grad_(False).eval()
        wanted = torch.float32 if name == "vae" and keep_vae_fp32 else dtype
        module.to(device)
        if next(module.parameters()).dtype != wanted:
            module.to(wanted)
    log(f"model: {model.family.label}, {model.prediction_type} prediction, native {model.resolution}px")
    if config.embeddings:
        loaded, skipped = load_folder(model, config.embeddings)
        log(f"embeddings from {config.embeddings}: {', '.join(loaded) or 'none'}")
        for why in skipped:
            log(f"note: embedding passed over: {why}")
    return model


def dataset_options(config: TrainConfig) -> dict:
    """The dataset options set in the training config (file or command line), as defaults below
    the dataset file's own [general]."""
    options = options_for_dataset(config.changed())
    if config.in_json:
        options["num_repeats"] = config.dataset_repeats
    return options


def data_config(config: TrainConfig):
    """The sd-scripts dataset: a dataset TOML, the inline [general]/[[datasets]] tables, or folders."""
    options = dataset_options(config)
    if config.dataset_config:
        return load_dataset_config(config.dataset_config, defaults=options)
    if config.dataset is not None:
        base = config.path.parent if config.path else None
        return config_from_dict(config.dataset, options, source=str(config.path or "config"), base_dir=base)
    return config_from_folders(config.train_data_dir, config.reg_data_dir, config.in_json, options)


def build_data(config: TrainConfig, resolution: int, seed: int, log, class_images: Path | None = None):
    """(training group, validation group or None). `resolution`: the model's own, for datasets
    that do not set one (ModelFacts.resolution, known before the model is loaded).
    `class_images`: a folder of DreamBooth class pictures, added as a regularization subset
    unless the dataset has it already."""
    data = data_config(config)
    if class_images is not None:
        add_reg_folder(data, class_images)
    group = build_datasets(data, resolution=resolution, prior_loss_weight=config.prior_loss_weight, seed=seed)
    if config.cache_latents or config.cache_latents_to_disk:
        check_cacheable(group)
    validation = None
    if any(ds.validation_split for ds in data.datasets):
        validation = build_datasets(data, resolution=resolution, seed=seed, split="validation", strict=False)
        if validation.steps_per_epoch == 0:
            validation = None
    return group, validation


def add_reg_folder(data, folder: Path) -> None:
    """`folder` as a regularization subset (captions in .txt files) of the first dataset."""
    subsets = [s for ds in data.datasets for s in ds.subsets]
    if data.datasets and not any(s.image_dir and s.image_dir.resolve() == folder.resolve() for s in subsets):
        data.datasets[0].subsets.append(
            SubsetConfig(image_dir=folder, is_reg=True, caption_extension=".txt", name=folder.name)
        )


def merge_base_weights(config: TrainConfig, model, log) -> None:
    """sd-scripts' base_weights: LoRAs baked into the base model before training starts."""
    if not config.base_weights:
        return
    multipliers = config.base_weights_multiplier or []
    if isinstance(multipliers, float):
        multipliers = [multipliers]
    specs = [
        (path, multipliers[i] if i < len(multipliers) else 1.0) for i, path in enumerate(config.base_weights)
    ]
    merge_networks(model, specs)
    log("merged into the base model: " + ", ".join(f"{p} x {m:g}" for p, m in specs))


def build_network(config: TrainConfig, model, log):
    """The network to train, hooked into the model. With dim_from_weights it takes its layers,
    dims, alphas and algorithm from network_weights (sd-scripts' create_network_from_weights)."""
    if config.dim_from_weights:
        if not config.network_weights:
            raise ConfigError("dim_from_weights needs network_weights (the LoRA file to continue).")
        network = create_network_from_weights(model, config.network_weights)
        ranks = sorted({m.dim for _, m in network.named_network_modules()})
        log(
            f"network shaped like {config.network_weights} (ranks {', '.join(map(str, ranks))}), weights loaded"
        )
        return network.apply_to()
    network = create_network(
        model,
        network_module=config.network_module,
        network_dim=config.network_dim,
        network_alpha=config.network_alpha,
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
    return network.apply_to()


def prepare_training(config: TrainConfig, model, network) -> bool:
    """Precision of the network, gradient checkpointing, train modes. Returns whether the text
    encoders train (some network module sits in them)."""
    if config.full_fp16 or config.full_bf16:
        network.to(torch.float16 if config.full_fp16 else torch.bfloat16)
    train_text = any(layer.part != "unet" for layer in network.layers.values())
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if train_text:
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if train_text:
        for encoder in model.text_encoders:
            encoder.train()  # dropout is 0 in CLIP; train mode only matters for checkpointing
    return train_text


def cache_images(config: TrainConfig, model, group, validation, log) -> None:
    """cache_latents / cache_latents_to_disk: every image through the VAE once, before training."""
    if not (config.cache_latents or config.cache_latents_to_disk):
        return
    xl, to_disk = model.family.is_xl, config.cache_latents_to_disk
    stats = cache_latents(group, model.vae, sdxl=xl, to_disk=to_disk, batch_size=config.vae_batch_size)
    foreign = f" ({stats.foreign} written by sd-scripts)" if stats.foreign else ""
    log(f"latents: {stats.encoded} encoded, {stats.reused} reused from disk{foreign}")
    if validation is not None:
        cache_latents(validation, model.vae, sdxl=xl, to_disk=to_disk)


def release_vae(config: TrainConfig, model, method_name: str, log) -> None:
    """Free the VAE's weights once every latent is cached, when nothing runs it again: no
    previews, and a method that saves its own weights only (not DreamBooth's whole model). The
    VAE is then dead weight in memory during training, where the peak is."""
    if not (config.cache_latents or config.cache_latents_to_disk) or config.sample_prompts:
        return
    if method_name != "lora":
        return
    freed = sum(p.numel() * p.element_size() for p in model.vae.parameters())
    model.vae.to("meta")  # the config (scaling factor) stays; the tensors go
    log(f"VAE freed after caching the latents ({freed / 1024**3:.2f} GB)")


def caption_cache(config: TrainConfig, model, group, train_text: bool, log) -> TextOutputCache | None:
    """The text-encoder outputs of the captions, while the encoders are frozen: kept as batches
    come, or all encoded before training with cache_text_encoder_outputs (to disk with
    cache_text_encoder_outputs_to_disk, reused by later runs)."""
    up_front = config.cache_text_encoder_outputs or config.cache_text_encoder_outputs_to_disk
    if train_text:
        if up_front:
            raise ConfigError(CACHE_NEEDS_FROZEN)
        return None
    text = TextOptions.from_config(config)
    if text.no_token_padding:  # captions of different lengths: encoded batch by batch
        if up_front:
            raise ConfigError(
                "no_token_padding gives each caption its own length, so the encoded captions cannot be "
                "cached: remove cache_text_encoder_outputs or no_token_padding."
            )
        return None
    to_disk = bool(config.cache_text_encoder_outputs_to_disk)
    cache = TextOutputCache(text_outputs(model, text), _encoder_id(model, text) if to_disk else "memory")
    if up_front:
        stats = cache.prefill(group, to_disk=to_disk)
        log(f"text encoder outputs: {stats.encoded} captions encoded, {stats.reused} reused from disk")
    return cache


def _encoder_id(model, text: TextOptions) -> str:
    """Changes when the encoders' weights, clip skip or token length change."""
    parts = [model.family.name, text.clip_skip, text.max_token_length]
    parts += [module_fingerprint(encoder) for encoder in model.text_encoders]
    if model.embeddings:  # embeddings (the `embeddings` folder) change what a caption encodes to
        parts += model.embeddings.fingerprint()
    return hashlib.sha256(repr(parts).encode()).hexdigest()
