"""Save a loaded model as an A1111/LDM single file or as a diffusers folder.

diffusers ships only the original -> diffusers conversion; the reverse here uses the same key maps
the loader uses (`lorakit.models.ldm`), so single file -> components -> single file gives back
every tensor bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..utils.files import atomic_path
from .families import SD2
from .ldm import clip as clip_keys
from .ldm import unet as unet_keys
from .ldm import vae as vae_keys
from .ldm.common import original_state_dict
from .model import StableDiffusionModel

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def original_state(model: StableDiffusionModel) -> dict[str, torch.Tensor]:
    """All tensors of `model` under their single-file (A1111) names."""
    family = model.family
    state: dict[str, torch.Tensor] = {}
    unet = model.unet.state_dict()
    state.update(original_state_dict(unet, unet_keys.key_map(unet, model.unet.config), family.unet_prefix))
    vae = model.vae.state_dict()
    state.update(original_state_dict(vae, vae_keys.key_map(vae, model.vae.config), family.vae_prefix))
    for encoder, tokenizer, prefix, open_clip in zip(
        model.text_encoders, model.tokenizers, family.text_prefixes, family.open_clip
    ):
        weights = encoder.state_dict()
        for key in [k for k in weights if k.endswith("token_embedding.weight")]:
            weights[key] = weights[key][: tokenizer.vocab_size]  # embeddings' rows stay out of the file
        state.update(original_state_dict(weights, clip_keys.key_map(weights, open_clip), prefix))
    if family == SD2:
        _complete_sd2_text_encoder(state, model)
    for key, tensor in model.extras.items():
        state.setdefault(key, tensor)
    return state


def _complete_sd2_text_encoder(state: dict[str, torch.Tensor], model: StableDiffusionModel) -> None:
    """SD2 uses the penultimate OpenCLIP layer, so the loaded encoder has one layer fewer than the
    file. When the original last layer is not at hand (model from a diffusers folder), write a copy
    of the layer before it, plus an identity projection, so A1111 and ComfyUI find every key they
    expect; neither uses these tensors for SD2."""
    prefix = model.family.text_prefixes[0] + "transformer.resblocks."
    layers = model.text_encoders[0].config.num_hidden_layers
    last, missing = f"{prefix}{layers - 1}.", f"{prefix}{layers}."
    if not any(k.startswith(missing) for k in model.extras):
        for key in [k for k in state if k.startswith(last)]:
            state[missing + key[len(last) :]] = state[key].clone()
    root = model.family.text_prefixes[0]
    width = model.text_encoders[0].config.hidden_size
    dtype = model.text_encoders[0].dtype
    if root + "text_projection" not in model.extras:
        state[root + "text_projection"] = torch.eye(width, dtype=dtype)
    if root + "logit_scale" not in model.extras:
        state[root + "logit_scale"] = torch.tensor(math.log(100.0), dtype=dtype)


def single_file_metadata(
    model: StableDiffusionModel, title: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The base file's metadata with modelspec.* for `model`; `extra` (a training's ss_* and
    modelspec keys) last."""
    meta = dict(model.metadata)
    meta.update(
        {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": model.architecture,
            "modelspec.implementation": (
                "https://github.com/Stability-AI/generative-models" if model.family.is_xl else "diffusers"
            ),
            "modelspec.prediction_type": "v" if model.prediction_type == "v_prediction" else "epsilon",
            "modelspec.resolution": f"{model.resolution}x{model.resolution}",
        }
    )
    if title:
        meta["modelspec.title"] = title
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def cast(state: dict[str, torch.Tensor], precision: str | None) -> dict[str, torch.Tensor]:
    if precision is None:
        return state
    dtype = PRECISIONS[precision]
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def save_single_file(
    model: StableDiffusionModel,
    path: str | Path,
    precision: str | None = None,
    title: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `model` as one `.safetensors` file in the A1111 layout, atomically.

    precision: "fp16" | "bf16" | "fp32"; None keeps each tensor's dtype. metadata: more keys
    for the file (a training's ss_* keys and modelspec overrides).
    """
    path = Path(path)
    state = {k: v.contiguous() for k, v in cast(original_state(model), precision).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=single_file_metadata(model, title or path.stem, metadata))
    return path


def save_diffusers(
    model: StableDiffusionModel, folder: str | Path, precision: str | None = None, in_place: bool = True
) -> Path:
    """Write `model` as a diffusers folder (model_index.json, unet/, vae/, text_encoder/ ...).

    The components are cast to `precision` in place, or with in_place=False cast copies are
    written (a model still training keeps its precision; costs a copy of the model in memory).
    """
    folder = Path(folder)
    if precision is not None and not in_place:
        dtype = PRECISIONS[precision]
        model = replace(
            model,
            unet=copy.deepcopy(model.unet).to(dtype),
            vae=copy.deepcopy(model.vae).to(dtype),
            text_encoders=[copy.deepcopy(e).to(dtype) for e in model.text_encoders],
        )
    elif precision is not None:
        for module in model.components.values():
            module.to(PRECISIONS[precision])
    pipe = model.pipeline()
    with atomic_path(folder) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
    return folder
