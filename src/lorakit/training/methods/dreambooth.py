"""DreamBooth and full fine-tuning (sd-scripts' `train_db.py`, `fine_tune.py`, `sdxl_train.py`):
the U-Net itself trains, and the text encoders too unless told otherwise; the file is a new
checkpoint in the A1111 single-file layout (fp16 unless save_precision says otherwise) or a
diffusers folder (save_model_as = "diffusers").

Prior preservation: regularization ("class") pictures keep the class prompt drawing what the base
model drew. Missing ones are drawn with the base model from `class_prompt`, up to
`num_class_images`, into the dataset's first regularization folder (or a `class_images` folder
beside the training pictures) with the class prompt as their caption, and reused by later runs,
as diffusers' DreamBooth script does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ...data.images import IMAGE_EXTENSIONS
from ...errors import ConfigError
from ...evaluation.generate import GenerationSettings, Generator
from ...models.save import save_diffusers, save_single_file
from ..previews import kept_random_state
from ..setup import build_data
from .base import Method

PRECISION_NAMES = {"float": "fp32", "fp16": "fp16", "bf16": "bf16", None: "fp16"}
CLASS_BATCH = 8


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


class DreamBoothMethod(Method):
    name = "dreambooth"
    kind = "checkpoint"

    def __init__(self, config):
        super().__init__(config)
        self.text_stopped = False

    @property
    def file_ext(self) -> str:
        return "" if self.config.save_model_as in ("diffusers", "diffusers_safetensors") else "safetensors"

    def trains_text(self, is_xl: bool) -> bool:
        c = self.config
        wanted = c.train_text_encoder if c.train_text_encoder is not None else not is_xl
        return bool(wanted) and c.stop_text_encoder_training != -1

    def preflight(self, facts) -> None:
        super().preflight(facts)
        c = self.config
        if self.trains_text(facts.family.is_xl) and (
            c.cache_text_encoder_outputs or c.cache_text_encoder_outputs_to_disk
        ):
            raise ConfigError(
                "cache_text_encoder_outputs needs frozen text encoders, but this DreamBooth run trains them. Set "
                "train_text_encoder = false (or stop_text_encoder_training = -1), or remove cache_text_encoder_outputs."
            )

    # -- class pictures ---------------------------------------------------------------------

    def class_folder(self, group) -> tuple[Path, str]:
        """(where the class pictures are, their caption extension): the dataset's first
        regularization folder, else `class_images` beside the training pictures."""
        c = self.config
        for ds in group.datasets:
            for subset in ds.config.subsets:
                if subset.is_reg and subset.image_dir is not None:
                    return Path(subset.image_dir), subset.caption_extension
        if c.dataset_config:
            base = Path(c.dataset_config).parent
        elif c.train_data_dir:
            base = Path(c.train_data_dir).parent
        else:
            base = c.path.parent if c.path else Path(".")
        return base / "class_images", ".txt"

    def prepare_data(self, model, group, validation, resolution, seed, log):
        c = self.config
        if not c.class_prompt:
            return group, validation
        folder, caption_ext = self.class_folder(group)
        have = len(images_in(folder))
        if have < c.num_class_images:
            log(f"class pictures: drawing {c.num_class_images - have} from '{c.class_prompt}' into {folder}")
            draw_class_images(model, c.class_prompt, folder, have, c.num_class_images, caption_ext)
        else:
            log(f"class pictures: {have} in {folder} (num_class_images = {c.num_class_images})")
        return build_data(c, resolution, seed, log, class_images=folder)

    # -- what trains ------------------------------------------------------------------------

    def build(self, model, log):
        c = self.config
        train_text = self.trains_text(model.family.is_xl)
        dtype = torch.float16 if c.full_fp16 else torch.bfloat16 if c.full_bf16 else torch.float32
        encoders = list(model.text_encoders) if train_text else []
        for module in [model.unet, *encoders]:
            if module.dtype != dtype:
                module.to(dtype)
        network = FullModel(model, encoders, c.save_model_as)
        log(
            f"DreamBooth: the U-Net{' and the text encoder(s)' if encoders else ''} train in {dtype}; the file "
            "is a full checkpoint"
            + (
                f"; the text encoders stop after step {c.stop_text_encoder_training}"
                if encoders and c.stop_text_encoder_training
                else ""
            )
        )
        return network

    def prepare(self, model, network) -> bool:
        checkpointing = self.config.gradient_checkpointing
        model.unet.requires_grad_(True).train()
        if checkpointing:
            model.unet.enable_gradient_checkpointing()
        for encoder in network.text_encoders:
            encoder.requires_grad_(True).train()
            if checkpointing:
                encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return bool(len(network.text_encoders))

    def param_groups(self, network) -> list[dict]:
        c = self.config
        groups = [{"params": list(network.unet.parameters()), "lr": c.learning_rate, "name": "unet"}]
        for i, (encoder, lr) in enumerate(zip(network.text_encoders, text_encoder_rates(c))):
            if lr == 0:  # sd-scripts: a text encoder at rate 0 does not train
                encoder.requires_grad_(False)
                continue
            groups.append(
                {"params": list(encoder.parameters()), "lr": lr, "name": "textencoder" + ("2" if i else "")}
            )
        return groups

    def at_step(self, step: int, ctx) -> None:
        """stop_text_encoder_training: from that step on the text encoders are frozen (also when a
        resumed run starts past it)."""
        stop = self.config.stop_text_encoder_training
        if self.text_stopped or not stop or stop < 0 or step < stop or not ctx.train_text:
            return
        for encoder in ctx.model.text_encoders:
            encoder.requires_grad_(False).eval()
        ctx.train_text = False  # captions are now encoded without gradients
        self.text_stopped = True

    def describe(self, network) -> str:
        n = sum(p.numel() for p in network.parameters() if p.requires_grad)
        parts = "U-Net" + (
            f" + {len(network.text_encoders)} text encoder(s)" if len(network.text_encoders) else ""
        )
        return f"DreamBooth ({parts}), {n:,} trainable parameters"


def text_encoder_rates(c) -> list[float]:
    """The learning rate of each text encoder: learning_rate_te1/te2 (SDXL), else
    learning_rate_te (one value or one per encoder), else learning_rate."""
    te = c.learning_rate_te
    rates = list(te) if isinstance(te, list) else [te]
    rates += [rates[-1]] * (2 - len(rates))
    for i, own in enumerate((c.learning_rate_te1, c.learning_rate_te2)):
        if own is not None:
            rates[i] = own
    return [c.learning_rate if r is None else r for r in rates]


def draw_class_images(model, prompt: str, folder: Path, start: int, target: int, caption_ext: str) -> None:
    """Class pictures start ... target-1 (seed = number), drawn with the base model as A1111
    draws them, each with its caption file; the training's random state is left as it was."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator(model, device=model.unet.device, cast=False, model_name="class")
    settings = GenerationSettings(prompt=prompt)
    with kept_random_state():
        for first in range(start, target, CLASS_BATCH):
            images = generator(replace(settings, seed=first, batch=min(CLASS_BATCH, target - first)))
            for image in images:
                image.save(folder / f"class-{image.seed:05d}.png")
                (folder / f"class-{image.seed:05d}{caption_ext}").write_text(prompt + "\n", encoding="utf-8")


class FullModel(nn.Module):
    """The trainable of a DreamBooth run: the model's U-Net and the text encoders that train;
    saved as a whole checkpoint (with the frozen parts and the VAE)."""

    kind = "checkpoint"

    def __init__(self, model, text_encoders: list, layout: str):
        super().__init__()
        self.unet = model.unet
        self.text_encoders = nn.ModuleList(text_encoders)
        self.model = [model]
        self.layout = layout

    @torch.no_grad()
    def weight_problem(self) -> str | None:
        for name, param in self.named_parameters():
            if param.requires_grad and not torch.isfinite(param).all():
                return f"{name} holds NaN or infinite values"
        return None

    def save(self, path, metadata=None, precision=None, modelspec=None) -> Path:
        model, name = self.model[0], PRECISION_NAMES.get(precision, precision)
        if self.layout in ("diffusers", "diffusers_safetensors"):
            return save_diffusers(model, path, precision=name, in_place=False)
        spec = {f"modelspec.{k}": str(v) for k, v in (modelspec or {}).items() if v}
        return save_single_file(model, path, precision=name, metadata={**(metadata or {}), **spec})
