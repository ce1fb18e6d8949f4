"""Natural-language captions through transformers: BLIP (`BlipForConditionalGeneration`, with the
defaults of sd-scripts' `finetune/make_captions.py`), Florence-2 (the native
`Florence2ForConditionalGeneration`: `<CAPTION>`, `<DETAILED_CAPTION>`, `<MORE_DETAILED_CAPTION>`)
and GIT (`GitForCausalLM`). The model's own processor (saved beside it) resizes and normalises
the images: 384 px for BLIP, as make_captions.py. fp16 on a GPU, fp32 on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, ModelError

FLORENCE_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
# generation defaults per family: BLIP as make_captions.py (nucleus sampling unless --beam_search,
# max_length 75, min_length 5); Florence-2 and GIT as their model cards (beam or greedy search)
FAMILY_DEFAULTS = {
    "blip": {"beam_search": False, "num_beams": 1, "max_length": 75, "min_length": 5},
    "florence2": {"beam_search": True, "num_beams": 3, "max_length": 1024, "min_length": 0},
    "git": {"beam_search": True, "num_beams": 1, "max_length": 50, "min_length": 0},
}


@dataclass
class CaptionOptions:
    """How captions are generated; None takes the model family's default (FAMILY_DEFAULTS)."""

    beam_search: bool | None = None  # False: nucleus sampling with top_p
    num_beams: int | None = None
    top_p: float = 0.9
    max_length: int | None = None  # tokens (for Florence-2: new tokens)
    min_length: int | None = None
    task: str = "<CAPTION>"  # Florence-2 only
    prompt: str | None = None  # BLIP only: text the caption continues ("a picture of"), then removed
    seed: int = 42

    def resolved(self, family: str) -> dict:
        d = FAMILY_DEFAULTS[family]
        return {k: d[k] if getattr(self, k) is None else getattr(self, k) for k in d}


def _family(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{folder / 'config.json'}: cannot be read ({e}); download it again.") from None
    model_type = config.get("model_type", "")
    if model_type == "florence2" and config.get("auto_map"):
        raise ModelError(
            f"{folder} is Microsoft's original Florence-2 repository, which runs code from the repository "
            "(trust_remote_code) that lorakit does not run. Use the converted one that transformers reads "
            "natively: --model florence-2-base (florence-community/Florence-2-base) or florence-2-large."
        )
    if model_type not in FAMILY_DEFAULTS:
        raise ModelError(
            f"{folder}: a '{model_type or 'unknown'}' model; lorakit captions with BLIP, Florence-2 or GIT "
            "(see lorakit tag --list-models)."
        )
    return model_type


def _device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu.")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


class Captioner:
    """A captioning model and its processor, loaded from a folder."""

    def __init__(self, folder: str | Path, device: str = "auto", fp32: bool = False):
        # transformers takes seconds to import; only captioning needs it, tagging must not wait for it
        import transformers

        self.folder = Path(folder)
        self.family = _family(self.folder)
        self.device = _device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" and not fp32 else torch.float32
        names = {
            "blip": "BlipForConditionalGeneration",
            "florence2": "Florence2ForConditionalGeneration",
            "git": "GitForCausalLM",
        }
        model_class = getattr(transformers, names[self.family], None)
        if model_class is None:
            raise ModelError(
                f"this transformers ({transformers.__version__}) has no {names[self.family]}; "
                "pip install -U transformers"
            )
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(self.folder)
            model = model_class.from_pretrained(self.folder)
        except (OSError, ValueError) as e:
            raise ModelError(
                f"{self.folder}: the {self.family} model cannot be loaded ({e}). The folder needs config.json, "
                "the weights (model.safetensors), preprocessor_config.json and the tokenizer files."
            ) from None
        self.model = model.to(self.device, self.dtype).eval()

    def seed(self, seed: int) -> None:
        """Sampling (BLIP's default) draws from torch's generator; seeding makes a run repeatable."""
        torch.manual_seed(seed)

    def _inputs(self, images: Sequence[np.ndarray], options: CaptionOptions):
        images = list(images)
        if self.family == "florence2":
            if options.task not in FLORENCE_TASKS:
                raise ConfigError(f"--task must be one of {', '.join(FLORENCE_TASKS)} (got {options.task}).")
            inputs = self.processor(images=images, text=[options.task] * len(images), return_tensors="pt")
        elif self.family == "blip" and options.prompt:
            inputs = self.processor(images=images, text=[options.prompt] * len(images), return_tensors="pt")
        else:
            inputs = self.processor(images=images, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _generate_kwargs(self, options: CaptionOptions) -> dict:
        o = options.resolved(self.family)
        if o["beam_search"]:
            kw = {"do_sample": False, "num_beams": o["num_beams"]}
        else:  # as BLIP's own sampling: nucleus, a light repetition penalty
            kw = {"do_sample": True, "top_p": options.top_p, "num_beams": 1, "repetition_penalty": 1.1}
        if self.family == "florence2":
            kw["max_new_tokens"] = o["max_length"]
        else:
            kw["max_length"] = o["max_length"]
        if o["min_length"]:
            kw["min_length"] = o["min_length"]
        return kw

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray], options: CaptionOptions | None = None) -> list[str]:
        """One caption per (H, W, 3) uint8 RGB image, on one line each."""
        options = options or CaptionOptions()
        if options.prompt and self.family != "blip":
            raise ConfigError("--prompt works with BLIP models only.")
        out = self.model.generate(**self._inputs(images, options), **self._generate_kwargs(options))
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        prompt = " ".join((options.prompt or "").lower().split())
        captions = []
        for text in texts:
            text = " ".join(text.split())
            if prompt and text.lower().startswith(prompt):
                text = text[len(prompt) :].strip()
            captions.append(text)
        return captions


def load_captioner(folder: str | Path, device: str = "auto", fp32: bool = False) -> Captioner:
    return Captioner(folder, device=device, fp32=fp32)
