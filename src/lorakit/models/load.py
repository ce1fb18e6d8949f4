"""Load a base model from a single-file checkpoint or a diffusers folder, with no network access."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..errors import ModelError
from . import infer
from .checkpoint_file import TensorFile
from .families import SD1, SD2, SDXL, Family, check_unet_input, detect
from .ldm import clip as clip_keys
from .ldm import unet as unet_keys
from .ldm import vae as vae_keys
from .ldm.common import SAME, KeyMap, to_diffusers
from .model import StableDiffusionModel
from .tokenizers import clip_tokenizer

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PrefixView:
    """The tensors of a file under one prefix, named without it; records which it handed out."""

    def __init__(self, file: TensorFile, prefix: str, used: set[str]):
        self.file, self.prefix, self.used = file, prefix, used
        self.keys = [k[len(prefix) :] for k in file if k.startswith(prefix)]
        self._last: tuple[str, torch.Tensor] | None = None

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.file

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self:
            raise _missing(str(self.file.path), self.prefix + key)
        return self.file.shape(self.prefix + key)

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor, read into memory of its own (converted to `dtype` if floating point)."""
        if self._last and self._last[0] == (key, dtype):  # fused q/k/v is read once for its three parts
            return self._last[1]
        tensor = self.file.read(self.prefix + key, dtype)
        self.used.add(self.prefix + key)
        self._last = ((key, dtype), tensor)
        return tensor

    def dtype(self, key: str) -> str:
        return self.file.dtype_name(self.prefix + key)


def load_model(
    path: str | Path,
    *,
    vae: str | Path | None = None,
    v_parameterization: bool | None = None,
    dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
) -> StableDiffusionModel:
    """Load SD1.x / SD2.x / SDXL from `path` (a `.safetensors`/`.ckpt` file or a diffusers folder).

    dtype: the dtype of the components; None keeps the dtype the file stores. vae_dtype: the
    VAE's, if other (a float32 VAE beside an fp16 U-Net). Each tensor is converted as it is read,
    so the model is never in memory twice.
    v_parameterization: force v-prediction (True) or epsilon (False); None reads it from the file.
    """
    path = Path(path)
    vae_dtype = vae_dtype or dtype
    if path.is_dir():
        model = _load_diffusers(path, dtype, vae_dtype)
    else:
        model = _load_single_file(path, dtype, vae_dtype=vae_dtype)
    if vae is not None:
        model.vae = load_vae(vae, model.family, vae_dtype)
    if v_parameterization is not None:
        model.prediction_type = "v_prediction" if v_parameterization else "epsilon"
        model.prediction_source = "option"
        if not path.is_dir():
            model.resolution = native_resolution(model.metadata, model.family, model.prediction_type)
    return model


@dataclass(frozen=True)
class ModelFacts:
    """What a model file is, read from its header (or a diffusers folder's config files) without
    building anything: enough to check a training config and its dataset before the slow load."""

    family: Family
    prediction_type: str
    resolution: int


def model_facts(path: str | Path, v_parameterization: bool | None = None) -> ModelFacts:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder.")
    if path.is_dir():
        return _folder_facts(path, v_parameterization)
    file = TensorFile(path)
    family = detect(file.keys(), str(path))
    check_unet_input(file.shape(family.unet_prefix + "input_blocks.0.0.weight")[1], str(path))
    prediction, _ = prediction_type_of(file, path)
    if v_parameterization is not None:
        prediction = "v_prediction" if v_parameterization else "epsilon"
    return ModelFacts(family, prediction, native_resolution(file.metadata, family, prediction))


def _folder_facts(folder: Path, v_parameterization: bool | None) -> ModelFacts:
    def config(name: str) -> dict:
        file = folder / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
        return json.loads(file.read_text()) if file.exists() else {}

    if not (folder / "model_index.json").exists():
        raise ModelError(
            f"{folder} is a folder but not a diffusers model (no model_index.json). Pass a "
            ".safetensors/.ckpt file or a diffusers folder."
        )
    unet, vae = config("unet"), config("vae")
    check_unet_input(unet.get("in_channels", 4), str(folder))
    if unet.get("addition_embed_type") == "text_time":
        family = SDXL
    else:
        family = SD2 if config("text_encoder").get("hidden_act") == "gelu" else SD1
    prediction = config("scheduler").get("prediction_type", "epsilon")
    if v_parameterization is not None:
        prediction = "v_prediction" if v_parameterization else "epsilon"
    factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return ModelFacts(family, prediction, unet.get("sample_size", family.resolution // 8) * factor)


# -- single file ------------------------------------------------------------------------------


def load_structure(path: str | Path) -> StableDiffusionModel:
    """A single-file checkpoint's model with its components on the meta device: every layer and
    shape, no weights (and no tokenizers) read. Streaming tools (merge, extract) resolve LoRA
    names and file keys against it, then read only the tensors they touch, so a 7 GB SDXL file
    is never in memory."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder; reading the structure alone needs a single-file checkpoint.")
    return _load_single_file(path, None, weights=False)


def _load_single_file(
    path: Path, dtype: torch.dtype | None, weights: bool = True, vae_dtype: torch.dtype | None = None
) -> StableDiffusionModel:
    file = TensorFile(path)
    source = str(path)
    family = detect(file.keys(), source)
    used: set[str] = set()

    unet_view = PrefixView(file, family.unet_prefix, used)
    check_unet_input(unet_view.shape("input_blocks.0.0.weight")[1], source)

    encoders = []
    for index, (prefix, open_clip) in enumerate(zip(family.text_prefixes, family.open_clip)):
        encoders.append(
            _load_text_encoder(file, family, index, prefix, open_clip, used, dtype, source, weights)
        )
    pooled = encoders[-1].config.projection_dim if family.is_xl else None

    unet_config = infer.unet_config(family, unet_view.keys, unet_view.shape, pooled)
    unet = _build(lambda: UNet2DConditionModel.from_config(unet_config))
    if weights:
        _fill(unet, unet_view, unet_keys.key_map(unet.state_dict().keys(), unet.config), dtype, source)

    vae_view = PrefixView(file, family.vae_prefix, used)
    vae = _build(lambda: AutoencoderKL.from_config(infer.vae_config(family, vae_view.keys, vae_view.shape)))
    if weights:
        _fill(
            vae, vae_view, vae_keys.key_map(vae.state_dict().keys(), vae.config), vae_dtype or dtype, source
        )

    skipped = [k for k in file if k.startswith("model_ema.")]
    extras = (
        {k: file.read(k) for k in file if k not in used and not k.startswith("model_ema.")} if weights else {}
    )
    file.close()
    prediction, told = prediction_type_of(file, path)
    model = StableDiffusionModel(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=[clip_tokenizer(open_clip) for open_clip in family.open_clip] if weights else [],
        prediction_type=prediction,
        prediction_source="file" if told else "default",
        resolution=native_resolution(file.metadata, family, prediction),
        source=source,
        extras=extras,
        skipped=skipped,
        metadata=file.metadata,
    )
    return model


def _load_text_encoder(file, family, index, prefix, open_clip, used, dtype, source, weights=True):
    name = "text_encoder" if index == 0 else "text_encoder_2"
    base = family.config(name)
    if open_clip:
        view = PrefixView(file, prefix, used)
        config = infer.open_clip_config(base, view.keys, view.shape, drop_last=family == SD2)
        cls = CLIPTextModelWithProjection if family.is_xl else CLIPTextModel
    else:
        inner = prefix + "text_model."
        view = PrefixView(file, inner if any(k.startswith(inner) for k in file) else prefix, used)
        config = infer.clip_l_config(base, view.keys, view.shape)
        cls = CLIPTextModel
    model = _build(lambda: cls(CLIPTextConfig(**config)))
    key_map = clip_keys.key_map(model.state_dict().keys(), open_clip)
    if not open_clip:  # the map names keys with `text_model.`; this view already removed it or never had it
        key_map = {k: (v.removeprefix("text_model."), op) for k, (v, op) in key_map.items()}
    if weights:
        _fill(model, view, key_map, dtype, source)
    return model


def _build(factory):
    """Create a model without allocating or initialising weights; `_fill` assigns them."""
    with init_empty_weights(include_buffers=False):
        return factory()


def _fill(model: torch.nn.Module, view: PrefixView, key_map: KeyMap, dtype, source: str) -> None:
    """Assign the file's tensors to a model built on the meta device, each read and converted
    to its final dtype (`dtype`, or the file's most common one) on its own."""
    expected = model.state_dict()
    for original, _ in key_map.values():
        if original not in view:
            raise _missing(source, view.prefix + original)
    target = dtype or _common_dtype(view.dtype(original) for original, _ in key_map.values())
    state = {}
    for key, (original, op) in key_map.items():
        if tuple(shape := _diffusers_shape(view, original, op)) != tuple(expected[key].shape):
            raise ModelError(
                f"{source}: tensor '{view.prefix}{original}' has shape {tuple(shape)}, expected "
                f"{tuple(expected[key].shape)}. The file mixes parts of different models or is damaged."
            )
        state[key] = to_diffusers(view.get(original, target), op)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)


def _diffusers_shape(view: PrefixView, original: str, op) -> torch.Size:
    """The shape `to_diffusers` gives the tensor, found on a meta tensor (nothing is read)."""
    return to_diffusers(torch.empty(view.shape(original), device="meta"), op).shape


def _missing(source: str, key: str) -> ModelError:
    return ModelError(
        f"{source} is incomplete: tensor '{key}' is missing. The file may be damaged or a partial "
        "export; use a complete checkpoint."
    )


_FLOAT_NAMES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _common_dtype(names) -> torch.dtype:
    """The most common floating dtype among the file's dtype names (`F16`, `torch.float16`...)."""
    dtypes = [_FLOAT_NAMES.get(n) or getattr(torch, str(n).removeprefix("torch."), None) for n in names]
    counts = Counter(d for d in dtypes if isinstance(d, torch.dtype) and d.is_floating_point)
    return counts.most_common(1)[0][0] if counts else torch.float32


def prediction_type_of(file: TensorFile, path: Path) -> tuple[str, bool]:
    """v-prediction if the file says so: modelspec metadata, a `v_pred` key, or an A1111-style
    `.yaml` beside it with `parameterization: "v"`. Otherwise epsilon."""
    meta = file.metadata
    told = meta.get("modelspec.prediction_type", "")
    if told:
        return ("v_prediction" if told.startswith("v") else "epsilon"), True
    if meta.get("modelspec.architecture", "").endswith("-v"):
        return "v_prediction", True
    if "v_pred" in file:
        return "v_prediction", True
    yaml_file = path.with_suffix(".yaml")
    if yaml_file.exists():
        found = re.search(r"parameterization:\s*['\"]?(\w+)", yaml_file.read_text(errors="replace"))
        if found:
            return ("v_prediction" if found[1] == "v" else "epsilon"), True
    return "epsilon", False


def native_resolution(meta: Mapping[str, str], family: Family, prediction: str) -> int:
    found = re.fullmatch(r"(\d+)x(\d+)", meta.get("modelspec.resolution", ""))
    if found:
        return int(found[1])
    return 768 if family == SD2 and prediction == "v_prediction" else family.resolution


# -- separate VAE -----------------------------------------------------------------------------


def load_vae(path: str | Path, family: Family, dtype: torch.dtype | None = None) -> AutoencoderKL:
    """A VAE file in the original layout (with or without `first_stage_model.`) or diffusers layout."""
    source = str(path)
    if Path(path).is_dir():
        return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    file = TensorFile(path)
    used: set[str] = set()
    if any(k.startswith("encoder.down_blocks.") for k in file):
        view = PrefixView(file, "", used)
        levels = infer._indices(view.keys, r"encoder\.down_blocks\.(\d+)\.")
        config = family.config("vae")
        config.update(
            block_out_channels=[
                view.shape(f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0] for i in levels
            ],
            down_block_types=["DownEncoderBlock2D"] * len(levels),
            up_block_types=["UpDecoderBlock2D"] * len(levels),
            layers_per_block=len(infer._indices(view.keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
            latent_channels=view.shape("post_quant_conv.weight")[0],
        )
        vae = _build(lambda: AutoencoderKL.from_config(config))
        _fill(vae, view, {k: (k, SAME) for k in vae.state_dict()}, dtype, source)
        return vae
    prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in file) else ""
    view = PrefixView(file, prefix, used)
    if "encoder.conv_in.weight" not in view:
        raise ModelError(f"{source} is not a VAE file (no encoder.conv_in weight found).")
    vae = _build(lambda: AutoencoderKL.from_config(infer.vae_config(family, view.keys, view.shape)))
    _fill(vae, view, vae_keys.key_map(vae.state_dict().keys(), vae.config), dtype, source)
    return vae


# -- diffusers folder -------------------------------------------------------------------------


def _load_diffusers(
    folder: Path, dtype: torch.dtype | None, vae_dtype: torch.dtype | None = None
) -> StableDiffusionModel:
    source = str(folder)
    index_file = folder / "model_index.json"
    if not index_file.exists():
        raise ModelError(
            f"{folder} is a folder but not a diffusers model (no model_index.json). Pass a "
            ".safetensors/.ckpt file or a diffusers folder."
        )
    index = json.loads(index_file.read_text())
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if "text_encoder_2" in index and "text_encoder" not in index:
        raise ModelError(f"{source} is an SDXL refiner. LoRAs are trained on the SDXL base model.")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs)
    check_unet_input(unet.config.in_channels, source)
    encoders = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kwargs)]
    if unet.config.addition_embed_type == "text_time":
        family = SDXL
        encoders.append(
            CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **kwargs)
        )
    else:
        family = SD2 if encoders[0].config.hidden_act == "gelu" else SD1
    vae_kwargs = {**kwargs, "torch_dtype": vae_dtype} if vae_dtype is not None else kwargs
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **vae_kwargs)
    for m in [unet, vae, *encoders]:
        m.eval().requires_grad_(False)
    tokenizers = [
        _folder_tokenizer(folder, name, oc)
        for name, oc in zip(("tokenizer", "tokenizer_2"), family.open_clip)
    ]
    prediction, told = "epsilon", False
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.exists():
        config = json.loads(scheduler_file.read_text())
        if "prediction_type" in config:
            prediction, told = config["prediction_type"], True
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return StableDiffusionModel(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        prediction_type=prediction,
        prediction_source="file" if told else "default",
        resolution=resolution,
        source=source,
    )


def _folder_tokenizer(folder: Path, name: str, open_clip: bool):
    """The folder's own tokenizer files when complete, else the shipped one (never the hub)."""
    sub = folder / name
    if (sub / "vocab.json").exists() and (sub / "merges.txt").exists():
        return CLIPTokenizer.from_pretrained(sub, local_files_only=True)
    return clip_tokenizer(open_clip)


__all__ = ["load_model", "load_structure", "load_vae", "DTYPES", "SD1", "SD2", "SDXL"]
