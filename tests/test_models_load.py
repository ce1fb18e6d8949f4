"""Loading single files and diffusers folders, offline, checked against independent code."""

import json

import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file

from lorakit.models.load import load_model
from lorakit.models.save import save_diffusers, save_single_file
from lorakit.models.tokenizers import clip_tokenizer


def _assert_same(actual: dict, expected: dict):
    actual = {k.removeprefix("text_model."): v for k, v in actual.items()}
    expected = {
        k.removeprefix("text_model."): v for k, v in expected.items() if not k.endswith("position_ids")
    }
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_loaded_components_equal_diffusers_own_conversion(tiny_checkpoints, family):
    """diffusers' single-file converters are an independent implementation of the same mapping."""
    path = tiny_checkpoints[family]
    model = load_model(path)
    original = load_file(path)
    _assert_same(model.unet.state_dict(), convert_ldm_unet_checkpoint(dict(original), model.unet.config))
    _assert_same(model.vae.state_dict(), convert_ldm_vae_checkpoint(dict(original), model.vae.config))
    if family == "sd1":
        expected = convert_ldm_clip_checkpoint(dict(original))
        _assert_same(model.text_encoders[0].state_dict(), expected)
    elif family == "sdxl":
        expected = convert_ldm_clip_checkpoint(
            dict(original), remove_prefix="conditioner.embedders.0.transformer."
        )
        _assert_same(model.text_encoders[0].state_dict(), expected)
        expected = convert_open_clip_checkpoint(
            model.text_encoders[1], dict(original), prefix="conditioner.embedders.1.model."
        )
        _assert_same(model.text_encoders[1].state_dict(), expected)


def test_families_and_prediction_types(tiny_checkpoints):
    sd1, sd2, sdxl = (load_model(tiny_checkpoints[f]) for f in ("sd1", "sd2", "sdxl"))
    assert (sd1.family.name, sd1.prediction_type) == ("sd1", "epsilon")
    assert (sd2.family.name, sd2.prediction_type, sd2.prediction_source) == ("sd2", "v_prediction", "file")
    assert (sdxl.family.name, len(sdxl.text_encoders)) == ("sdxl", 2)
    assert sdxl.unet.config.addition_embed_type == "text_time"
    # SD2 reads the penultimate OpenCLIP layer: the encoder has one layer fewer than the file
    file_layers = {
        k.split("resblocks.")[1].split(".")[0] for k in load_file(tiny_checkpoints["sd2"]) if "resblocks" in k
    }
    assert sd2.text_encoders[0].config.num_hidden_layers == len(file_layers) - 1
    assert sd2.noise_scheduler().config.prediction_type == "v_prediction"


def test_tokenizer_is_offline_and_exact():
    assert clip_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = clip_tokenizer(open_clip=True)("a cat", padding="max_length", max_length=6).input_ids
    assert padded == [49406, 320, 2368, 49407, 0, 0]  # OpenCLIP pads with "!" (id 0)
    assert clip_tokenizer()("a cat", padding="max_length", max_length=6).input_ids[-1] == 49407


def test_models_run_after_loading(tiny_checkpoints):
    """The loaded parts work together: encode a prompt, denoise a latent, decode it."""
    for family in ("sd1", "sdxl"):
        model = load_model(tiny_checkpoints[family])
        ids = model.tokenizers[0]("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
        hidden = model.text_encoders[0](ids).last_hidden_state
        if family == "sdxl":
            out2 = model.text_encoders[1](ids, output_hidden_states=True)
            hidden = torch.cat([hidden, out2.hidden_states[-2]], dim=-1)
            added = {"text_embeds": out2.text_embeds, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        else:
            added = None
        latent = torch.randn(1, 4, 32, 32)
        with torch.no_grad():
            noise = model.unet(latent, 10, hidden, added_cond_kwargs=added).sample
            image = model.vae.decode(latent).sample
        assert noise.shape == latent.shape and torch.isfinite(noise).all()
        assert image.shape == (1, 3, 64, 64)


def test_diffusers_folder_round_trip(tiny_checkpoints, tmp_path):
    for family in ("sd1", "sd2", "sdxl"):
        model = load_model(tiny_checkpoints[family])
        folder = save_diffusers(model, tmp_path / f"{family}-diffusers")
        assert json.loads((folder / "model_index.json").read_text())["unet"] == [
            "diffusers",
            "UNet2DConditionModel",
        ]
        again = load_model(folder)
        assert again.family.name == family
        assert again.prediction_type == model.prediction_type
        for name, module in model.components.items():
            reloaded = again.components[name].state_dict()
            for key, tensor in module.state_dict().items():
                assert torch.equal(tensor, reloaded[key]), (family, name, key)
        # and back to a single file: the component tensors are those of the original file
        out = save_single_file(again, tmp_path / f"{family}-back.safetensors")
        before, after = load_file(tiny_checkpoints[family]), load_file(out)
        for key, tensor in after.items():
            if (
                key in before
                and not key.endswith(("text_projection", "logit_scale"))
                and ".resblocks.2." not in key
            ):
                assert torch.equal(before[key], tensor), key
        assert set(before) <= set(after)


def test_ema_keys_are_skipped_and_fp16_file_loads(tiny_checkpoints, tmp_path):
    state = load_file(tiny_checkpoints["sd1"])
    state = {k: v.half() for k, v in state.items()}
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["model_ema.diffusion_modelinput_blocks00weight"] = (
        state["model.diffusion_model.input_blocks.0.0.weight"] * 2
    )
    path = tmp_path / "ema-fp16.safetensors"
    save_file(state, str(path))
    model = load_model(path)
    assert model.unet.dtype == torch.float16
    assert sorted(model.skipped) == ["model_ema.decay", "model_ema.diffusion_modelinput_blocks00weight"]
    assert torch.equal(model.unet.conv_in.weight, state["model.diffusion_model.input_blocks.0.0.weight"])
    assert load_model(path, dtype=torch.float32).unet.dtype == torch.float32


class _Callback:
    """Pickled under Lightning's name, as real .ckpt files carry it."""

    def __init__(self):
        self.best = 1.0


_Callback.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
_Callback.__qualname__ = _Callback.__name__ = "ModelCheckpoint"


def test_ckpt_with_lightning_objects_loads_without_running_code(tiny_checkpoints, tmp_path, monkeypatch):
    import sys
    import types

    names = ["pytorch_lightning", "pytorch_lightning.callbacks", _Callback.__module__]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[_Callback.__module__].ModelCheckpoint = _Callback
    state = dict(load_file(tiny_checkpoints["sd1"]))
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "callbacks": {"cb": _Callback()}, "global_step": 470000}, path)
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    assert b"pytorch_lightning" in path.read_bytes()
    model = load_model(path)
    assert torch.equal(model.unet.conv_in.weight, state["model.diffusion_model.input_blocks.0.0.weight"])


def test_separate_vae_file_replaces_the_models_vae(tiny_checkpoints, tmp_path):
    other = load_model(tiny_checkpoints["sdxl"]).vae  # same tiny shapes, other weights
    original = save_single_file(load_model(tiny_checkpoints["sdxl"]), tmp_path / "x.safetensors")
    state = {
        k.removeprefix("first_stage_model."): v
        for k, v in load_file(original).items()
        if k.startswith("first_stage_model.")
    }
    save_file(state, str(tmp_path / "vae-ldm.safetensors"))
    save_file(other.state_dict(), str(tmp_path / "vae-diffusers.safetensors"))
    for name in ("vae-ldm.safetensors", "vae-diffusers.safetensors"):
        model = load_model(tiny_checkpoints["sd1"], vae=tmp_path / name)
        assert torch.equal(model.vae.decoder.conv_out.weight, other.decoder.conv_out.weight), name


def test_v_parameterization_option_and_yaml_beside_the_file(tiny_checkpoints, tmp_path):
    state = load_file(tiny_checkpoints["sd2"])
    path = tmp_path / "sd2.safetensors"
    save_file(state, str(path))  # no metadata: the file does not say
    model = load_model(path)
    assert (model.prediction_type, model.prediction_source) == ("epsilon", "default")
    assert load_model(path, v_parameterization=True).prediction_type == "v_prediction"
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    model = load_model(path)
    assert (model.prediction_type, model.prediction_source, model.resolution) == ("v_prediction", "file", 768)


def test_loading_in_a_dtype_equals_converting_after(tiny_checkpoints, tmp_path):
    """Tensors are converted as they are read (no float32 copy of an fp16 file first): the
    result must equal loading as stored and converting afterwards, bit for bit, and a VAE
    dtype of its own must apply to the VAE only."""
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in load_file(tiny_checkpoints["sd1"]).items()
    }
    path = tmp_path / "fp16.safetensors"
    save_file(state, str(path))
    stored = load_model(path)
    for dtype in (torch.float32, torch.bfloat16):
        direct = load_model(path, dtype=dtype, vae_dtype=torch.float32)
        for name, module in direct.components.items():
            wanted = torch.float32 if name == "vae" else dtype
            reference = stored.components[name].state_dict()
            for key, tensor in module.state_dict().items():
                assert tensor.dtype == (wanted if tensor.is_floating_point() else reference[key].dtype), key
                assert torch.equal(tensor, reference[key].to(tensor.dtype)), (name, key)
