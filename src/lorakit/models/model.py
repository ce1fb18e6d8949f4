"""The loaded base model: diffusers/transformers components plus what the file said about them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from .embeddings import ModelEmbeddings
from .families import Family

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class StableDiffusionModel:
    family: Family
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[CLIPTextModel]  # SDXL: [CLIP-L, OpenCLIP-bigG with projection]
    tokenizers: list[CLIPTokenizer]
    prediction_type: str = "epsilon"
    prediction_source: str = "default"  # "option" | "file" | "default": how prediction_type was decided
    resolution: int = 512
    source: str = ""
    # Original-layout tensors that no component uses (SD2's unused last text layer, schedule
    # buffers, `v_pred` markers...). Written back on save so a round trip loses nothing.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # tensors not loaded on purpose (EMA copies)
    metadata: dict[str, str] = field(default_factory=dict)
    embeddings: ModelEmbeddings = field(default_factory=ModelEmbeddings)  # textual inversions in use

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        parts: dict[str, torch.nn.Module] = {"unet": self.unet, "vae": self.vae}
        for i, encoder in enumerate(self.text_encoders):
            parts["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
        return parts

    def noise_scheduler(self) -> DDPMScheduler:
        """The DDPM scaled-linear schedule every SD1/SD2/SDXL model was trained with."""
        config = self.family.config("scheduler")
        config["prediction_type"] = self.prediction_type
        return DDPMScheduler.from_config(config)

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in module.parameters()) for name, module in self.components.items()}

    def dtypes(self) -> dict[str, str]:
        out = {}
        for name, module in self.components.items():
            counts = Counter(str(p.dtype).removeprefix("torch.") for p in module.parameters())
            out[name] = ", ".join(dtype for dtype, _ in counts.most_common())
        return out

    def pipeline(self, force_zeros_for_empty_prompt: bool = True):
        """A diffusers text-to-image pipeline over this model's own modules (no copy), with an
        Euler scheduler of the model's prediction type and no safety checker."""
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        scheduler = EulerDiscreteScheduler.from_config(self.noise_scheduler().config)
        if self.family.is_xl:
            return StableDiffusionXLPipeline(
                vae=self.vae,
                text_encoder=self.text_encoders[0],
                text_encoder_2=self.text_encoders[1],
                tokenizer=self.tokenizers[0],
                tokenizer_2=self.tokenizers[1],
                unet=self.unet,
                scheduler=scheduler,
                force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @property
    def base_model_version(self) -> str:
        """sd-scripts' `ss_base_model_version` value."""
        if self.family.is_xl:
            return "sdxl_base_v1-0"
        version = "sd_v1" if self.family.name == "sd1" else "sd_v2"
        return version + ("_v" if self.prediction_type == "v_prediction" else "")

    @property
    def architecture(self) -> str:
        """The `modelspec.architecture` name of the model."""
        if self.family.is_xl:
            return "stable-diffusion-xl-v1-base"
        if self.family.name == "sd1":
            return "stable-diffusion-v1"
        return (
            "stable-diffusion-v2-768-v"
            if self.prediction_type == "v_prediction"
            else "stable-diffusion-v2-512"
        )
