"""Every option of `lorakit train`, in one table.

The table gives each option its sd-scripts name, type, default, section and a plain-words
explanation. From it come the command-line flags, the checks of a TOML file (an unknown key is an
error that suggests the nearest name), `--print-config` and the option list in `--help`. Options
of sd-scripts that lorakit does not need are accepted and reported as ignored with the reason, so
a user's existing sd-scripts or lora-scripts config runs unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..data.config import key_default
from ..data.schema import KEYS
from ..errors import ConfigError, LorakitError
from ..evaluation.samplers import find_sampler
from ..utils.suggest import did_you_mean
from .names import OPTIMIZERS, SCHEDULES


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    kind: str  # "str" | "int" | "float" | "bool" | "list" (of str) | "number" (int, or float < 1 = ratio) | "floats"
    section: str
    help: str
    dataset_key: str | None = None  # the dataset config key this option sets for every dataset
    check: Callable[[Any], Any] | None = None  # raises ValueError(reason) for a value out of range


def _o(name, default, kind, section, help, check=None):
    return Option(name, default, kind, section, help, check=check)


def _dataset_rows() -> list[Option]:
    """The dataset options, from the dataset schema that owns them (names, help, checks)."""
    return [
        Option(k.option, key_default(name), k.kind, "dataset", k.help, dataset_key=name, check=k.parse)
        for name, k in KEYS.items()
        if k.option
    ]


# -- value rules: each raises ValueError(reason); the message names the option and the value ----


def _numbers(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def at_least(low: float):
    def check(value):
        if any(v < low for v in _numbers(value)):
            raise ValueError(f"must be at least {low}")

    return check


def above(low: float):
    def check(value):
        if any(v <= low for v in _numbers(value)):
            raise ValueError(f"must be more than {low}")

    return check


def between(low: float, high: float):
    def check(value):
        if any(not low <= v <= high for v in _numbers(value)):
            raise ValueError(f"must be between {low} and {high}")

    return check


def one_of(*choices: str):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}{did_you_mean(str(value), choices)}")

    return check


def fraction_below_1(value) -> None:
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and below 1 (0.1 means 10%)")


def any_number(value) -> None:
    """Any finite number (NaN and infinity are never what was meant)."""
    if any(not math.isfinite(v) for v in _numbers(value)):
        raise ValueError("must be a finite number")


def optimizer_name(value: str) -> None:
    if "." not in value and value.lower() not in OPTIMIZERS:
        raise ValueError(
            f"is not an optimizer lorakit knows.{did_you_mean(value.lower(), OPTIMIZERS)} Known: "
            + ", ".join(sorted(OPTIMIZERS))
            + ", or a class path such as bitsandbytes.optim.AdEMAMix8bit"
        )


def scheduler_name(value: str) -> None:
    if value not in SCHEDULES:
        raise ValueError(
            f"is not a schedule lorakit knows.{did_you_mean(value, SCHEDULES)} Known: {', '.join(SCHEDULES)}"
        )


def sampler_name(value: str) -> None:
    try:
        find_sampler(value)
    except LorakitError as e:
        raise ValueError(f"is not usable: {e}") from None


def file_name(value: str) -> None:
    if not value.strip() or any(c in value for c in '/\\:*?"<>|') or value in (".", ".."):
        raise ValueError(
            'must be a plain file name (no folders or / \\ : * ? " < > |); set the folder with output_dir'
        )


def method_name(value: str) -> None:
    one_of(*TRAINING_TYPES)(value)


def embedding_word(value) -> None:
    """A word a prompt can name: letters, digits, _ and - (A1111 finds an embedding by its name)."""
    for word in _numbers(value):
        if not re.fullmatch(r"[\w\-]+", str(word)):
            raise ValueError(f"{word!r} must be one word of letters, digits, _ or - (it is typed in prompts)")


def whole_numbers(value) -> None:
    for v in _numbers(value):
        if not str(v).isdigit() or int(v) < 1:
            raise ValueError(f"{v!r} must be a whole number above 0 (a width such as 768)")


def layer_structure(value) -> None:
    values = _numbers(value)
    if len(values) < 2 or values[0] != 1 or values[-1] != 1 or any(v <= 0 for v in values):
        raise ValueError("must start and end with 1, with sizes above 0 in between, like [1, 2, 1]")


TRAINING_TYPES = ("lora", "dreambooth", "textual_inversion", "hypernetwork")
HYPERNETWORK_ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "gelu", "mish")
HYPERNETWORK_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


M, D, MT, N, OPT, T, S, V, L = (
    "model",
    "dataset",
    "method",
    "network",
    "optimizer",
    "training",
    "sampling",
    "saving",
    "logging",
)

OPTIONS: list[Option] = [
    # -- model
    _o(
        "pretrained_model_name_or_path",
        None,
        "str",
        M,
        "The base model: a .safetensors/.ckpt file or a diffusers folder.",
    ),
    _o(
        "v2",
        False,
        "bool",
        M,
        "sd-scripts flag for SD2 models. lorakit detects SD2 from the file; kept for old configs.",
    ),
    _o("sdxl", False, "bool", M, "Expect an SDXL model (lorakit detects the family; this only checks it)."),
    _o(
        "v_parameterization",
        False,
        "bool",
        M,
        "The model predicts velocity (SD2 768-v and v-pred fine-tunes) and its file does not say.",
    ),
    _o("vae", None, "str", M, "Use this VAE file instead of the one inside the model."),
    _o(
        "clip_skip",
        None,
        "int",
        M,
        "Use the text encoder's output N layers from the end (2 is common for anime models). Empty = the model's default.",
        check=at_least(1),
    ),
    _o(
        "max_token_length",
        None,
        "int",
        M,
        "Longest caption in tokens: 75 (default), 150 or 225. Longer captions are cut.",
    ),
    _o(
        "no_half_vae",
        False,
        "bool",
        M,
        "Keep the VAE in fp32 even with fp16/bf16 training. Needed for the SDXL VAE in fp16 (it gives NaN).",
    ),
    # -- dataset
    _o("train_data_dir", None, "str", D, "Folder that holds the image folders named N_name (N = repeats)."),
    _o("reg_data_dir", None, "str", D, "Folder that holds regularization image folders named N_name."),
    _o(
        "dataset_config",
        None,
        "str",
        D,
        "A dataset TOML in sd-scripts format ([general], [[datasets]], [[datasets.subsets]]).",
    ),
    _o("in_json", None, "str", D, "Fine-tuning metadata JSON (captions per image) for train_data_dir."),
    _o("dataset_repeats", 1, "int", D, "Repeats for images listed in in_json.", check=at_least(1)),
    *_dataset_rows(),
    _o("masked_loss", False, "bool", D, "Use conditioning masks as loss masks (sd-scripts name)."),
    _o("prior_loss_weight", 1.0, "float", D, "Loss weight of regularization images.", check=at_least(0)),
    _o(
        "cache_latents",
        False,
        "bool",
        D,
        "Encode all images with the VAE once before training (faster, less memory).",
    ),
    _o("cache_latents_to_disk", False, "bool", D, "Keep the encoded images on disk, reused by later runs."),
    _o("vae_batch_size", 1, "int", D, "Images encoded at once when caching latents.", check=at_least(1)),
    _o(
        "cache_text_encoder_outputs",
        False,
        "bool",
        D,
        "Encode captions once (only when the text encoder is not trained and captions do not change).",
    ),
    _o("cache_text_encoder_outputs_to_disk", False, "bool", D, "Keep encoded captions on disk."),
    _o(
        "max_data_loader_n_workers",
        0,
        "int",
        D,
        "Worker processes that load images. 0 loads in the main process.",
        check=at_least(0),
    ),
    _o("persistent_data_loader_workers", False, "bool", D, "Keep loader workers alive between epochs."),
    _o("validate_every_n_steps", None, "int", D, "Measure validation loss every N steps.", check=at_least(0)),
    _o("validate_every_n_epochs", 1, "int", D, "Measure validation loss every N epochs.", check=at_least(0)),
    _o(
        "max_validation_steps",
        None,
        "int",
        D,
        "Cap on validation batches per measurement.",
        check=at_least(0),
    ),
    # -- method: what training changes (LoRA, DreamBooth, Textual Inversion, Hypernetwork)
    _o(
        "training_type",
        "lora",
        "str",
        MT,
        "What to train. lora: a small add-on file (the default). dreambooth: the whole model, saved as a new "
        "checkpoint. textual_inversion: only a new word's embedding, a file of a few KB. hypernetwork: A1111's "
        "small network on the attention inputs, a .pt file.",
        check=method_name,
    ),
    _o(
        "train_text_encoder",
        None,
        "bool",
        MT,
        "DreamBooth: also train the text encoder(s). Empty = as sd-scripts: yes for SD1/SD2 (train_db.py), "
        "no for SDXL (sdxl_train.py).",
    ),
    _o(
        "learning_rate_te",
        None,
        "floats",
        MT,
        "DreamBooth: learning rate of the text encoder (one value, or one per encoder on SDXL). Empty = learning_rate.",
        check=at_least(0),
    ),
    _o("learning_rate_te1", None, "float", MT, "DreamBooth on SDXL: learning rate of the first text encoder (CLIP-L).", check=at_least(0)),
    _o("learning_rate_te2", None, "float", MT, "DreamBooth on SDXL: learning rate of the second text encoder (OpenCLIP-G).", check=at_least(0)),
    _o(
        "stop_text_encoder_training",
        None,
        "int",
        MT,
        "DreamBooth: stop training the text encoder after this many steps (-1: never train it). Empty = train it all along.",
        check=at_least(-1),
    ),
    _o(
        "no_token_padding",
        False,
        "bool",
        MT,
        "DreamBooth: do not pad captions to 75 tokens (as diffusers' DreamBooth script does).",
    ),
    _o(
        "class_prompt",
        None,
        "str",
        MT,
        "DreamBooth prior preservation: the prompt of the class, e.g. \"a photo of a dog\". Missing class "
        "pictures are drawn with the base model from it, up to num_class_images, and kept in the dataset.",
    ),
    _o(
        "num_class_images",
        100,
        "int",
        MT,
        "DreamBooth prior preservation: how many class pictures the regularization folder should hold.",
        check=at_least(1),
    ),
    _o(
        "fused_backward_pass",
        False,
        "bool",
        MT,
        "Apply each weight's update as soon as its gradient is ready (with AdaFactor or AdamW): far less memory "
        "for a full fine-tune. Needs gradient_accumulation_steps = 1.",
    ),
    _o(
        "token_string",
        None,
        "str",
        MT,
        "Textual inversion: the new word to train, e.g. ohwx. Its file is named after it, and A1111 finds it by that name.",
        check=embedding_word,
    ),
    _o(
        "init_word",
        None,
        "str",
        MT,
        "Textual inversion / pivotal tuning: start the new word from this word's meaning (e.g. shape). Empty = *.",
    ),
    _o(
        "num_vectors_per_token",
        1,
        "int",
        MT,
        "Textual inversion: how many token vectors the new word gets (more learns more, uses more of the 75 tokens).",
        check=at_least(1),
    ),
    _o(
        "use_object_template",
        False,
        "bool",
        MT,
        "Textual inversion: ignore the captions and use object templates (\"a photo of a ...\").",
    ),
    _o(
        "use_style_template",
        False,
        "bool",
        MT,
        "Textual inversion: ignore the captions and use style templates (\"a painting in the style of ...\").",
    ),
    _o(
        "train_embeddings",
        [],
        "list",
        MT,
        "Pivotal tuning (with lora): words whose embeddings train with the LoRA, e.g. ohwx. They are stored in "
        "the LoRA file (A1111's bundled embeddings).",
        check=embedding_word,
    ),
    _o(
        "embedding_lr",
        None,
        "float",
        MT,
        "Pivotal tuning: learning rate of the trained embeddings. Empty = learning_rate.",
        check=at_least(0),
    ),
    _o(
        "export_embeddings",
        False,
        "bool",
        MT,
        "Pivotal tuning: also write each trained word as its own embedding file (NAME-embeddings/WORD.safetensors) "
        "for programs that do not read embeddings inside a LoRA.",
    ),
    _o(
        "embeddings",
        None,
        "str",
        MT,
        "A folder of embeddings (as A1111's embeddings folder): a word in a caption or preview prompt that is a "
        "file's name uses that embedding.",
    ),
    _o(
        "hypernetwork_layer_structure",
        [1.0, 2.0, 1.0],
        "floats",
        MT,
        "Hypernetwork: the sizes of its layers relative to the attention width (A1111's \"1, 2, 1\").",
        check=layer_structure,
    ),
    _o(
        "hypernetwork_activation_func",
        "linear",
        "str",
        MT,
        "Hypernetwork: activation between its layers: linear, relu, leakyrelu, elu, swish, tanh, sigmoid, ...",
        check=one_of(*HYPERNETWORK_ACTIVATIONS),
    ),
    _o(
        "hypernetwork_weight_init",
        "Normal",
        "str",
        MT,
        "Hypernetwork: how its weights start: Normal, XavierUniform, XavierNormal, KaimingUniform or KaimingNormal.",
        check=one_of(*HYPERNETWORK_INITS),
    ),
    _o("hypernetwork_layer_norm", False, "bool", MT, "Hypernetwork: add layer normalization after each layer."),
    _o(
        "hypernetwork_dropout_structure",
        [],
        "floats",
        MT,
        "Hypernetwork: dropout after each layer, one value per layer size, starting and ending with 0 (e.g. 0, 0.3, 0). Empty = none.",
        check=between(0, 0.99),
    ),
    _o(
        "hypernetwork_activate_output",
        False,
        "bool",
        MT,
        "Hypernetwork: apply the activation after the last layer too.",
    ),
    _o(
        "hypernetwork_sizes",
        [],
        "list",
        MT,
        "Hypernetwork: the attention widths it acts on (A1111's modules 768, 1024, 320, 640, 1280). Empty = all of the model's.",
        check=whole_numbers,
    ),
    # -- network
    _o(
        "network_module",
        "networks.lora",
        "str",
        N,
        "Network type: networks.lora (LoRA/LoCon), networks.dylora, or lycoris.kohya (with algo= in network_args).",
    ),
    _o("network_weights", None, "str", N, "Start from this LoRA file (continue training it)."),
    _o("dim_from_weights", False, "bool", N, "Take network_dim and alpha from network_weights."),
    _o(
        "network_dim",
        4,
        "int",
        N,
        "Rank of the LoRA: its size and capacity. 8-32 for a character or style; higher learns more detail and more noise.",
        check=at_least(1),
    ),
    _o(
        "network_alpha",
        1.0,
        "float",
        N,
        "Scales the LoRA's effect by alpha/dim. alpha = dim means no scaling; smaller alpha needs a larger learning rate.",
        check=at_least(0),
    ),
    _o(
        "network_dropout",
        None,
        "float",
        N,
        "Dropout on the LoRA's inner values (0.1 typical).",
        check=fraction_below_1,
    ),
    _o(
        "network_args",
        [],
        "list",
        N,
        "Extra network options as key=value: conv_dim=4, conv_alpha=1, algo=loha, factor=8, block_dims=..., ...",
    ),
    _o(
        "network_train_unet_only",
        False,
        "bool",
        N,
        "Train only the U-Net part (faster, less memory; common for SDXL).",
    ),
    _o("network_train_text_encoder_only", False, "bool", N, "Train only the text encoder part."),
    _o(
        "unet_lr",
        None,
        "float",
        N,
        "Learning rate of the U-Net part. Empty = learning_rate.",
        check=at_least(0),
    ),
    _o(
        "text_encoder_lr",
        None,
        "floats",
        N,
        "Learning rate of the text encoder part (one value, or one per encoder on SDXL). Empty = learning_rate.",
        check=at_least(0),
    ),
    _o(
        "scale_weight_norms",
        None,
        "float",
        N,
        "Keep each LoRA module's weight norm at most this value (1.0 typical). Prevents overcooking.",
        check=above(0),
    ),
    _o("base_weights", [], "list", N, "LoRA files merged into the model before training."),
    _o("base_weights_multiplier", [], "floats", N, "Weight of each base_weights file.", check=any_number),
    _o("training_comment", None, "str", N, "A comment stored in the LoRA file's metadata."),
    _o("no_metadata", False, "bool", N, "Store only the minimum metadata in the LoRA file."),
    # -- optimizer
    _o(
        "optimizer_type",
        "AdamW",
        "str",
        OPT,
        "AdamW, AdamW8bit, Lion, Lion8bit, DAdaptation, Prodigy, AdaFactor, AdamWScheduleFree, ... or a class path.",
        check=optimizer_name,
    ),
    _o(
        "learning_rate",
        1e-4,
        "float",
        OPT,
        "Base learning rate. 1e-4 for AdamW LoRA; about 1.0 for DAdaptation/Prodigy.",
        check=above(0),
    ),
    _o(
        "max_grad_norm",
        1.0,
        "float",
        OPT,
        "Clip gradients to this norm (0 = no clipping).",
        check=at_least(0),
    ),
    _o(
        "optimizer_args",
        [],
        "list",
        OPT,
        "Extra optimizer options as key=value, e.g. weight_decay=0.01 betas=0.9,0.99.",
    ),
    _o(
        "lr_scheduler",
        "constant",
        "str",
        OPT,
        "How the learning rate changes: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.",
        check=scheduler_name,
    ),
    _o(
        "lr_warmup_steps",
        0,
        "number",
        OPT,
        "Steps of warm-up, or a fraction of all steps if below 1 (e.g. 0.05).",
        check=at_least(0),
    ),
    _o(
        "lr_decay_steps",
        0,
        "number",
        OPT,
        "Steps of decay at the end (warmup_stable_decay), or a fraction.",
        check=at_least(0),
    ),
    _o("lr_scheduler_num_cycles", 1, "int", OPT, "Restarts for cosine_with_restarts.", check=at_least(1)),
    _o("lr_scheduler_power", 1.0, "float", OPT, "Power of the polynomial schedule.", check=above(0)),
    _o(
        "lr_scheduler_min_lr_ratio",
        None,
        "float",
        OPT,
        "Lowest learning rate as a fraction of the start (cosine_with_min_lr).",
        check=between(0, 1),
    ),
    _o("lr_scheduler_type", None, "str", OPT, "A scheduler class path, instead of lr_scheduler."),
    _o("lr_scheduler_args", [], "list", OPT, "Options for lr_scheduler_type as key=value."),
    _o("use_8bit_adam", False, "bool", OPT, "Old sd-scripts switch: same as optimizer_type = AdamW8bit."),
    _o("use_lion_optimizer", False, "bool", OPT, "Old sd-scripts switch: same as optimizer_type = Lion."),
    # -- training
    _o(
        "max_train_steps",
        1600,
        "int",
        T,
        "Total optimizer steps (ignored when max_train_epochs is set).",
        check=at_least(1),
    ),
    _o(
        "max_train_epochs",
        None,
        "int",
        T,
        "Number of epochs (passes over images × repeats). Sets the total steps.",
        check=at_least(1),
    ),
    _o("seed", None, "int", T, "Random seed; the same seed and data give the same LoRA.", check=at_least(0)),
    _o(
        "mixed_precision",
        "no",
        "str",
        T,
        "no, fp16 or bf16. bf16 is safer than fp16; on CPU bf16 is also faster.",
    ),
    _o("full_fp16", False, "bool", T, "Keep the LoRA weights in fp16 too (less memory, less stable)."),
    _o(
        "full_bf16",
        False,
        "bool",
        T,
        "Keep the trained weights in bf16 too (the LoRA, or with DreamBooth the whole model: half the memory).",
    ),
    _o(
        "gradient_checkpointing",
        False,
        "bool",
        T,
        "Recompute activations in the backward pass: much less memory, about 20% slower.",
    ),
    _o(
        "gradient_accumulation_steps",
        1,
        "int",
        T,
        "Add up gradients of N batches before each optimizer step (a larger effective batch).",
        check=at_least(1),
    ),
    _o("sdpa", True, "bool", T, "Use PyTorch's fused attention (always on in lorakit)."),
    _o(
        "noise_offset",
        None,
        "float",
        T,
        "Add a constant offset to the noise (about 0.05-0.1) so the model can learn very dark and bright images.",
        check=at_least(0),
    ),
    _o("noise_offset_random_strength", False, "bool", T, "Use a random offset between 0 and noise_offset."),
    _o(
        "adaptive_noise_scale",
        None,
        "float",
        T,
        "Add this times the latent's mean to the noise offset.",
        check=any_number,
    ),
    _o(
        "multires_noise_iterations",
        None,
        "int",
        T,
        "Pyramid noise levels (6-10 suggested).",
        check=at_least(1),
    ),
    _o(
        "multires_noise_discount",
        0.3,
        "float",
        T,
        "Weight of each coarser pyramid level.",
        check=between(0, 1),
    ),
    _o(
        "ip_noise_gamma",
        None,
        "float",
        T,
        "Input perturbation: extra noise on the input only (about 0.1).",
        check=at_least(0),
    ),
    _o(
        "ip_noise_gamma_random_strength",
        False,
        "bool",
        T,
        "Use a random strength between 0 and ip_noise_gamma.",
    ),
    _o(
        "min_snr_gamma",
        None,
        "float",
        T,
        "Min-SNR loss weighting; 5 is recommended. Speeds up learning of details.",
        check=above(0),
    ),
    _o("debiased_estimation_loss", False, "bool", T, "Weight the loss by 1/sqrt(SNR)."),
    _o(
        "scale_v_pred_loss_like_noise_pred",
        False,
        "bool",
        T,
        "For v-prediction, scale the loss as for noise prediction.",
    ),
    _o(
        "v_pred_like_loss",
        None,
        "float",
        T,
        "Add a v-prediction-like loss term with this weight.",
        check=at_least(0),
    ),
    _o(
        "zero_terminal_snr",
        False,
        "bool",
        T,
        "Rescale the noise schedule so the last step is pure noise (for v-prediction models).",
    ),
    _o("min_timestep", None, "int", T, "Lowest noise step trained (0-999).", check=between(0, 999)),
    _o(
        "max_timestep",
        None,
        "int",
        T,
        "Highest noise step trained plus one (1-1000).",
        check=between(1, 1000),
    ),
    _o(
        "loss_type",
        "l2",
        "str",
        T,
        "l2 (default), l1, huber or smooth_l1.",
    ),
    _o(
        "huber_schedule",
        "snr",
        "str",
        T,
        "How huber_c changes with the step: constant, exponential or snr.",
        check=one_of("constant", "exponential", "snr"),
    ),
    _o("huber_c", 0.1, "float", T, "Huber loss threshold.", check=above(0)),
    _o("huber_scale", 1.0, "float", T, "Huber loss scale.", check=above(0)),
    # -- sampling
    _o("sample_prompts", None, "str", S, "A prompt file (.txt, .toml or .json) for preview images."),
    _o("sample_every_n_steps", None, "int", S, "Make previews every N steps (0 = off).", check=at_least(0)),
    _o(
        "sample_every_n_epochs",
        None,
        "int",
        S,
        "Make previews every N epochs (wins over steps; 0 = off).",
        check=at_least(0),
    ),
    _o("sample_at_first", False, "bool", S, "Make previews before training starts."),
    _o(
        "sample_sampler",
        "ddim",
        "str",
        S,
        'Sampler for previews: ddim, euler_a, dpmsolver++, or an A1111 name like "DPM++ 2M Karras".',
        check=sampler_name,
    ),
    # -- saving
    _o("output_dir", "output", "str", V, "Folder for the LoRA files, previews, logs and state."),
    _o("output_name", "lora", "str", V, "Base name of the saved files.", check=file_name),
    _o(
        "save_model_as",
        "safetensors",
        "str",
        V,
        "File format: safetensors (recommended), ckpt or pt. Textual inversion: pt writes A1111's .pt layout. "
        "DreamBooth: diffusers writes a diffusers folder.",
        check=one_of("safetensors", "ckpt", "pt", "diffusers", "diffusers_safetensors"),
    ),
    _o(
        "save_precision",
        None,
        "str",
        V,
        "Precision of the saved file: float, fp16 or bf16. Empty = the training precision (DreamBooth: fp16).",
        check=one_of("float", "fp16", "bf16"),
    ),
    _o("save_every_n_epochs", None, "int", V, "Save the LoRA every N epochs (0 = only at the end).", check=at_least(0)),
    _o("save_every_n_steps", None, "int", V, "Save the LoRA every N steps (0 = off).", check=at_least(0)),
    _o("save_n_epoch_ratio", None, "int", V, "Save about N times over the whole run.", check=at_least(0)),
    _o(
        "save_last_n_epochs",
        None,
        "int",
        V,
        "Keep only the last N epoch files (older ones are deleted).",
        check=at_least(0),
    ),
    _o(
        "save_last_n_steps",
        None,
        "int",
        V,
        "Keep only the step files of the last N steps.",
        check=at_least(0),
    ),
    _o(
        "save_state",
        False,
        "bool",
        V,
        "Also save the training state (optimizer, scheduler, random state) so the run can resume.",
    ),
    _o("save_state_on_train_end", False, "bool", V, "Save the training state at the end."),
    _o("save_last_n_epochs_state", None, "int", V, "Keep only the last N epoch states.", check=at_least(0)),
    _o(
        "save_last_n_steps_state",
        None,
        "int",
        V,
        "Keep only the states of the last N steps.",
        check=at_least(0),
    ),
    _o(
        "overwrite",
        False,
        "bool",
        V,
        "Start a new run in an output folder that holds an earlier run: its files of this output_name and "
        "its run.json are deleted first. Without it lorakit refuses, so no earlier run is lost by mistake.",
    ),
    _o(
        "resume",
        None,
        "str",
        V,
        "Continue from a saved state folder, or 'auto' for the newest state in output_dir.",
    ),
    _o("metadata_title", None, "str", V, "Title stored in the LoRA file (modelspec.title)."),
    _o("metadata_author", None, "str", V, "Author stored in the LoRA file."),
    _o("metadata_description", None, "str", V, "Description stored in the LoRA file."),
    _o("metadata_license", None, "str", V, "Licence stored in the LoRA file."),
    _o("metadata_tags", None, "str", V, "Comma-separated tags stored in the LoRA file."),
    _o("metadata_trigger_phrase", None, "str", V, "Trigger word(s) stored in the LoRA file."),
    # -- logging
    _o("logging_dir", None, "str", L, "Folder for TensorBoard logs. Empty = output_dir/logs."),
    _o("log_with", "tensorboard", "str", L, "tensorboard, or none."),
    _o("log_prefix", None, "str", L, "Prefix of the log folder name."),
    _o("log_tracker_name", None, "str", L, "Name of the run in the tracker."),
    _o("console_log_level", None, "str", L, "DEBUG, INFO (default), WARNING or ERROR."),
]

# Options that do not change what a training step computes: how long the run is, how often it
# saves, samples, validates or logs, where its files go. A resumed run may change them; every
# other option is part of the run's identity (training.checkpointing.RunIdentity).
NOT_IDENTITY = frozenset(
    {
        "resume", "overwrite", "output_dir", "logging_dir", "log_with", "log_prefix", "log_tracker_name",
        "console_log_level", "max_train_epochs", "max_train_steps", "max_data_loader_n_workers",
        "persistent_data_loader_workers", "validate_every_n_steps", "validate_every_n_epochs",
        "max_validation_steps", "sdpa", "vae_batch_size", "training_comment", "no_metadata",
        "save_model_as", "save_precision", "save_every_n_epochs", "save_every_n_steps", "save_n_epoch_ratio",
        "save_last_n_epochs", "save_last_n_steps", "save_state", "save_state_on_train_end",
        "save_last_n_epochs_state", "save_last_n_steps_state", "sample_prompts", "sample_every_n_steps",
        "sample_every_n_epochs", "sample_at_first", "sample_sampler",
        "metadata_title", "metadata_author", "metadata_description", "metadata_license", "metadata_tags",
        "metadata_trigger_phrase", "export_embeddings",
    }
)  # fmt: skip

BY_NAME = {o.name: o for o in OPTIONS}
SECTIONS = [M, D, MT, N, OPT, T, S, V, L]

# sd-scripts options that lorakit accepts and does not need, with the reason shown to the user.
IGNORED = {
    "xformers": "lorakit always uses PyTorch's fused attention (SDPA); xformers is not needed",
    "mem_eff_attn": "lorakit always uses PyTorch's fused attention (SDPA)",
    "lowram": "not needed: lorakit loads checkpoints memory-mapped",
    "highvram": "not needed",
    "tokenizer_cache_dir": "lorakit ships its tokenizers and never downloads them",
    "debug_dataset": "use 'lorakit dataset check' instead",
    "persistent_data_loader_workers": "workers are managed by lorakit",
    "log_config": "the resolved configuration is always saved in run.json",
    "console_log_simple": "not needed",
    "console_log_file": "the run record run.json keeps the history",
    "wandb_api_key": "only TensorBoard logging is supported",
    "wandb_run_name": "only TensorBoard logging is supported",
    "log_tracker_config": "only TensorBoard logging is supported",
    "ddp_timeout": "set by accelerate",
    "ddp_gradient_as_bucket_view": "set by accelerate",
    "ddp_static_graph": "set by accelerate",
    "dynamo_backend": "not supported",
    "torch_compile": "not supported yet",
    "cache_info": "not needed",
    "skip_cache_check": "the cache is checked by content hash",
    "weighted_captions": "not supported: (word:1.2) weights are read as plain text",
    "save_state_to_huggingface": "no uploads",
    "resume_from_huggingface": "no uploads",
    "async_upload": "no uploads",
    "huggingface_repo_id": "no uploads",
    "huggingface_repo_type": "no uploads",
    "huggingface_path_in_repo": "no uploads",
    "huggingface_token": "no uploads",
    "huggingface_repo_visibility": "no uploads",
    "output_config": "use 'lorakit train CONFIG --print-config'",
    "config_file": "pass the file as 'lorakit train CONFIG'",
    "fp8_base": "fp8 base weights are not supported yet",
    "fp8_base_unet": "fp8 base weights are not supported yet",
    "deepspeed": "use accelerate's multi-GPU launch instead",
    "zero_stage": "use accelerate's multi-GPU launch instead",
    "initial_epoch": "use resume: it restores the epoch and step counts",
    "initial_step": "use resume: it restores the epoch and step counts",
    "skip_until_initial_step": "use resume: it restores the epoch and step counts",
    "save_model_as_diffusers": "LoRA files are single safetensors files",
    "cpu_offload_checkpointing": "not supported",
    "lr_scheduler_timescale": "not needed for the supported schedulers",
}


def parse_value(option: Option, value: Any, where: str) -> Any:
    """Convert a TOML or command-line value to the option's type, or say what is wrong."""
    if value is None:
        return None
    kind = option.kind
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "number":
            number = float(value)
            return number if number < 1 and number != 0 else int(number)
        if kind == "floats":
            if isinstance(value, (list, tuple)):
                return [float(v) for v in value]
            if isinstance(value, str) and "," in value:
                return [float(v) for v in value.split(",") if v.strip()]
            return float(value)
        if kind == "list":
            if isinstance(value, str):
                return value.split()
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: '{option.name}' must be {_KIND_WORDS[kind]}, got {value!r}. ({option.help})"
        ) from None


def check_value(option: Option, value: Any, where: str) -> Any:
    """The value converted to the option's kind and checked against its rules."""
    value = parse_value(option, value, where)
    if option.check is not None and value is not None:
        try:
            option.check(value)
        except ValueError as e:
            raise ConfigError(f"{where}: '{option.name}' {e} (found {value!r}).") from None
    return value


_KIND_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "number": "a whole number, or a fraction below 1",
    "floats": "a number or a list of numbers",
    "list": "a list of strings",
    "str": "text",
}


class ConfigOptions:
    """Base of the small frozen option objects the parts below the recipe take instead of the
    whole config: each is a dataclass whose fields are named as options, read once by
    `from_config`, so a misspelt field fails when the run starts, not when a line runs."""

    @classmethod
    def from_config(cls, config):
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})  # type: ignore[arg-type]
