"""Images from a base model plus networks, with diffusers pipelines and lorakit's own LoRA code.

One `Generator` holds one pipeline for one loaded model, built once; each request only swaps the
scheduler (cheap) and the merged networks (restored bit for bit). Noise comes from CPU generators
seeded per image (image i of a batch has seed + i, as in A1111), so a seed gives the same image on
CPU and GPU, alone or in a batch.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import LorakitError
from ..models.embedding_files import load_folder
from ..models.load import load_model
from ..models.model import StableDiffusionModel
from ..models.prompt_conditioning import encode_prompts, parse
from ..utils.files import a1111_hashes, atomic_path
from .networks_adapter import NetworkSwitcher, hook_hypernetworks
from .pngmeta import GenerationParameters, addnet_hash, png_info
from .prompts import DEFAULT_CFG, DEFAULT_STEPS, LoraRef, PromptSpec, extract_lora_tags
from .samplers import DEFAULT_SAMPLER, find_sampler, make_scheduler, sampler_timesteps

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# How many pipelines this process has built: a grid must build exactly one.
pipeline_builds = 0


class GenerationError(LorakitError):
    """A generation request lorakit cannot run as given."""


@dataclass
class GenerationSettings:
    """One request: `batch` images of one prompt. width/height None: the model's resolution."""

    prompt: str
    negative_prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    seed: int = -1  # -1: a random seed
    width: int | None = None
    height: int | None = None
    batch: int = 1
    clip_skip: int = 1  # A1111's "Clip skip": 1 uses the last layer, 2 the one before
    loras: list[LoraRef] = field(default_factory=list)
    prompt_style: str = "a1111"  # how emphasis, BREAK and long prompts are read: a1111 | comfy | plain


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    parameters: GenerationParameters

    @property
    def problem(self) -> str | None:
        """'black' / 'uniform' when the picture shows nothing (see `blank_picture`)."""
        return blank_picture(np.asarray(self.image.convert("RGB")))

    def save(self, path: str | Path) -> Path:
        """Write a PNG with the A1111 "parameters" chunk, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.image.save(tmp, format="PNG", pnginfo=png_info(self.parameters))
        return path


def blank_picture(image: np.ndarray) -> str | None:
    """'black' / 'uniform' for a picture that shows nothing: the visible sign of a network that
    collapsed (NaN weights draw black) or of weights far too strong."""
    pixels = image.astype(np.float32)
    if pixels.max() < 8:
        return "black"
    if pixels.std() < 2:
        return "uniform"
    return None


BLANK_ADVICE = (
    "the network may be broken (a NaN or a far too high learning rate in training), or its weight "
    "far too high: try a lower weight or an earlier epoch's file"
)


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """fp16 on a GPU (what A1111 uses), fp32 on the CPU (half precision is slow or missing there)."""
    if precision and precision != "auto":
        if precision not in PRECISIONS:
            raise GenerationError(f"precision '{precision}': use one of auto, {', '.join(PRECISIONS)}.")
        return PRECISIONS[precision]
    return torch.float32 if device.type == "cpu" else torch.float16


def random_seed() -> int:
    return random.randrange(4294967294)


def build_pipeline(model: StableDiffusionModel):
    """A diffusers pipeline over the model's own modules (no copy), as A1111 users expect it:
    no safety checker, and SDXL encodes an empty negative prompt instead of using zeros."""
    global pipeline_builds
    pipe = model.pipeline(force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    pipeline_builds += 1
    return pipe


class Generator:
    """Generates images from one loaded model; networks are merged per request and swapped
    without reloading the base weights."""

    def __init__(
        self,
        model: StableDiffusionModel,
        device: str | torch.device | None = None,
        precision: str | None = None,
        model_name: str | None = None,
        model_hash: str | None = None,
        cast: bool = True,
    ):
        """cast=False keeps the model's devices and dtypes as they are (training previews must not
        change the model being trained); the initial noise then takes the U-Net's dtype."""
        self.model = model
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.dtype = pick_dtype(self.device, precision) if cast else model.unet.dtype
        for module in model.components.values():
            if cast and (module.device != self.device or module.dtype != self.dtype):
                module.to(self.device, self.dtype)
        self.pipe = build_pipeline(model)
        self.networks = NetworkSwitcher(model)
        self.hypernetworks: list = []  # (Hypernetwork, strength), hooked into the model
        self.model_name = model_name if model_name is not None else _model_name(model)
        self._model_hash = model_hash
        self._lora_hashes: dict[Path, str] = {}

    @property
    def model_hash(self) -> str:
        """A1111's short model hash (first 10 of the file's sha256); "" for a folder. Computed
        once, on first use, since it reads the whole file."""
        if self._model_hash is None:
            source = Path(self.model.source)
            self._model_hash = a1111_hashes(source)["short_hash"] if source.is_file() else ""
        return self._model_hash

    def lora_hash(self, path: Path) -> str:
        path = Path(path).resolve()
        if path not in self._lora_hashes:
            self._lora_hashes[path] = addnet_hash(path)[:12]
        return self._lora_hashes[path]

    def resolve(self, settings: GenerationSettings) -> GenerationSettings:
        """Settings with defaults filled in and checked, before any work is done."""
        size = self.model.resolution
        s = replace(
            settings,
            width=settings.width or size,
            height=settings.height or size,
            seed=random_seed() if settings.seed is None or settings.seed < 0 else settings.seed,
        )
        find_sampler(s.sampler)
        multiple = 8
        for name, value in (("width", s.width), ("height", s.height)):
            if value <= 0 or value % multiple:
                raise GenerationError(f"{name} {value} must be a positive multiple of {multiple}.")
        if s.steps < 1:
            raise GenerationError(f"steps {s.steps} must be at least 1.")
        if s.batch < 1:
            raise GenerationError(f"batch {s.batch} must be at least 1.")
        if s.clip_skip < 1:
            raise GenerationError(f"clip skip {s.clip_skip} must be 1 (no skip) or more.")
        layers = self.model.text_encoders[0].config.num_hidden_layers
        if s.clip_skip > layers:
            raise GenerationError(f"clip skip {s.clip_skip} is more than the text encoder's {layers} layers.")
        parse(s.prompt, s.prompt_style)  # a bad weight or A1111 prompt editing fails here
        parse(s.negative_prompt, s.prompt_style, negative=True)
        return s

    def parameters(self, s: GenerationSettings, seed: int) -> GenerationParameters:
        tags = " ".join(lora.tag() for lora in s.loras)
        hashes = {}
        for lora in s.loras:
            hashes.setdefault(lora.name, self.lora_hash(lora.path))
        return GenerationParameters(
            prompt=f"{s.prompt} {tags}".strip() if tags else s.prompt,
            negative_prompt=s.negative_prompt,
            steps=s.steps,
            sampler=find_sampler(s.sampler).name,
            cfg=s.cfg,
            seed=seed,
            width=s.width,
            height=s.height,
            model_hash=self.model_hash or None,
            model=self.model_name or None,
            clip_skip=s.clip_skip if not self.model.family.is_xl else None,
            lora_hashes=hashes,
            extra={**_style_parameters(s), **self._hypernetwork_parameters()},
        )

    def _hypernetwork_parameters(self) -> dict[str, str]:
        """A1111's "Hypernet" and "Hypernet strength" (several: joined by commas)."""
        if not self.hypernetworks:
            return {}
        return {
            "Hypernet": ", ".join(net.name for net, _ in self.hypernetworks),
            "Hypernet strength": ", ".join(f"{strength:g}" for _, strength in self.hypernetworks),
        }

    def load_embeddings(self, folder: str | Path) -> tuple[list[str], list[str]]:
        """Every embedding file in `folder`, usable in prompts by file name (A1111's embeddings
        folder): (the names loaded, the files passed over with why)."""
        return load_folder(self.model, folder)

    def use_hypernetworks(self, options: list[str]) -> None:
        """`FILE[:STRENGTH]` hypernetworks on every image from now on (until `close`)."""
        self.hypernetworks += hook_hypernetworks(self.model, options)

    @torch.no_grad()
    def __call__(self, settings: GenerationSettings) -> list[GeneratedImage]:
        s = self.resolve(settings)
        seeds = [s.seed + i for i in range(s.batch)]
        images = self._run(s, [s.prompt], seeds)
        return [GeneratedImage(image, seed, self.parameters(s, seed)) for image, seed in zip(images, seeds)]

    @torch.no_grad()
    def draw(self, settings: GenerationSettings, prompts: Sequence[str], seeds: Sequence[int], scheduler=None):
        """One picture per (prompt, seed), drawn together under `settings` (its prompt, seed and
        batch are not used). Each picture's starting noise comes from its own seed, so a picture
        depends only on its prompt, seed and settings, not on what else is in the batch: the
        quickstart scores hundreds of pictures this way. `scheduler`: a diffusers scheduler to
        use instead of the named sampler (the quickstart's own)."""
        if len(prompts) != len(seeds):
            raise GenerationError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt.")
        if not prompts:
            return []
        s = self.resolve(replace(settings, prompt=prompts[0], seed=int(seeds[0]), batch=1))
        return self._run(s, list(prompts), [int(seed) for seed in seeds], scheduler)

    def _run(self, s: GenerationSettings, prompts: list[str], seeds: list[int], scheduler=None) -> list[Image.Image]:
        """Resolved settings -> pictures: one prompt for all seeds, or one prompt per seed."""
        self.networks.use(s.loras)  # before the prompts are encoded: a LoRA may change the text encoder
        texts = [self.conditioning(replace(s, prompt=prompt)) for prompt in prompts]
        if len(texts) > 1 and len({t["prompt_embeds"].shape for t in texts}) > 1:  # of different lengths
            return [image for text, seed in zip(texts, seeds) for image in self._pipeline(s, text, [seed], 1, scheduler)]
        joined = texts[0] if len(texts) == 1 else {key: torch.cat([t[key] for t in texts]) for key in texts[0]}
        return self._pipeline(s, joined, seeds, len(seeds) // len(prompts), scheduler)

    def _pipeline(self, s: GenerationSettings, text: dict, seeds: list[int], per_prompt: int, scheduler=None):
        """One pipeline call: the encoded prompts `text`, `per_prompt` pictures of each, one per seed."""
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        latents = self._initial_latents(s, generators)
        kwargs = {"num_inference_steps": s.steps}
        if scheduler is not None:
            self.pipe.scheduler = scheduler
        else:
            sampler = find_sampler(s.sampler)
            self.pipe.scheduler = make_scheduler(sampler, self.model.noise_scheduler().config, seeds)
            timesteps = sampler_timesteps(sampler, s.steps)
            if timesteps is not None:
                kwargs = {"timesteps": timesteps}
        return self.pipe(
            guidance_scale=s.cfg,
            width=s.width,
            height=s.height,
            num_images_per_prompt=per_prompt,
            generator=generators,
            latents=latents,
            output_type="pil",
            **kwargs,
            **text,
        ).images

    def conditioning(self, s: GenerationSettings) -> dict[str, torch.Tensor]:
        """The pipeline's text inputs: prompt and negative prompt encoded as A1111 encodes them (or
        in `s.prompt_style`), with clip skip, any length, SDXL's pooled embeddings included."""
        if s.clip_skip > 1 and self.model.family.is_xl:
            log.info("Clip skip is not used for SDXL (as in A1111); ignoring %d", s.clip_skip)
        cond, uncond = encode_prompts(self.model, s.prompt, s.negative_prompt, s.prompt_style, s.clip_skip)
        kwargs = {"prompt_embeds": cond.hidden, "negative_prompt_embeds": uncond.hidden}
        if cond.pooled is not None:
            kwargs.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
        return kwargs

    def _initial_latents(self, s: GenerationSettings, generators: list[torch.Generator]) -> torch.Tensor:
        factor = self.pipe.vae_scale_factor
        shape = (1, self.model.unet.config.in_channels, s.height // factor, s.width // factor)
        noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
        return torch.cat(noise).to(self.device, self.dtype)

    def close(self) -> None:
        """Take the networks out of the model (the base weights come back exactly)."""
        self.networks.clear()
        for net, _ in self.hypernetworks:
            net.remove()
        self.hypernetworks.clear()


def _style_parameters(s: GenerationSettings) -> dict[str, str]:
    """What A1111 needs to read the prompt the same way: "Emphasis: None" is A1111's own name for
    plain text; ComfyUI's weighting has no A1111 setting, so it is only named."""
    texts = (s.prompt, s.negative_prompt)
    if s.prompt_style == "plain" and any("(" in t or "[" in t or "BREAK" in t for t in texts):
        return {"Emphasis": "None"}
    if s.prompt_style == "comfy":
        return {"Prompt style": "comfy"}
    return {}


def _model_name(model: StableDiffusionModel) -> str:
    return Path(model.source).stem if model.source and not model.source.startswith("random ") else ""


_NUMBERED = re.compile(r"^(\d+)-")


def next_image_number(folder: Path) -> int:
    """A1111 numbers its outputs 00000-SEED.png, 00001-SEED.png...; continue after the highest."""
    numbers = [int(m[1]) for p in folder.glob("*.png") if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def save_images(images: list[GeneratedImage], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = next_image_number(folder)
    return [img.save(folder / f"{start + i:05d}-{img.seed}.png") for i, img in enumerate(images)]


def open_generator(
    model_path: str | Path,
    vae: str | Path | None = None,
    v_parameterization: bool | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Generator:
    """Load a base model (once) and build its generator."""
    return Generator(
        load_model(model_path, vae=vae, v_parameterization=v_parameterization), device, precision
    )


def settings_for_prompt(
    spec: PromptSpec, defaults: GenerationSettings, lora_dir: str | Path | None = None
) -> GenerationSettings:
    """A prompt-file entry over the command's settings: the entry's own --n/--w/--h/--d/--s/--l/--ss
    win, and its `<lora:...>` tags add networks to the command's --lora ones."""
    prompt, tagged = extract_lora_tags(spec.prompt, lora_dir)
    return replace(
        defaults,
        prompt=prompt,
        negative_prompt=spec.negative_prompt or defaults.negative_prompt,
        width=spec.width or defaults.width,
        height=spec.height or defaults.height,
        seed=spec.seed if spec.seed is not None else defaults.seed,
        steps=spec.steps or defaults.steps,
        cfg=spec.cfg if spec.cfg is not None else defaults.cfg,
        sampler=spec.sampler or defaults.sampler,
        loras=[*defaults.loras, *tagged],
    )
