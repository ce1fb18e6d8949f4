"""lorakit files through diffusers' own loader: `load_lora_weights` + `fuse_lora` must change the
weights exactly as lorakit's merge does, every module consumed, nothing else touched."""

import warnings

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from network_helpers import layer_weights, randomize, tiny

from lorakit.networks import create_network, merge_networks


def pipeline(model):
    if model.family.is_xl:
        return StableDiffusionXLPipeline(
            vae=model.vae,
            text_encoder=model.text_encoders[0],
            text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0],
            tokenizer_2=model.tokenizers[1],
            unet=model.unet,
            scheduler=model.noise_scheduler(),
        )
    return StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        tokenizer=model.tokenizers[0],
        unet=model.unet,
        scheduler=model.noise_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.mark.parametrize(
    "family, args",
    [("sd1", []), ("sd1", ["conv_dim=4", "conv_alpha=2"]), ("sdxl", ["conv_dim=2"])],
    ids=["sd1-lora", "sd1-locon", "sdxl-locon"],
)
def test_diffusers_fuse_equals_lorakit_merge(family, args, tmp_path):
    trained = tiny(family)
    net = create_network(trained, "networks.lora", 4, 2, args)
    randomize(net)
    path = net.save(tmp_path / "net.safetensors")

    ours = tiny(family)
    original = layer_weights(ours)
    merge_networks(ours, [path])
    expected = layer_weights(ours)

    theirs = tiny(family)
    pipe = pipeline(theirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # diffusers raises on any kohya key its converter does not consume
        pipe.load_lora_weights(str(path))
    unexpected = [
        str(w.message)
        for w in caught
        if "unexpected" in str(w.message).lower()
        or "not" in str(w.message).lower()
        and "lora" in str(w.message).lower()
    ]
    assert not unexpected, unexpected
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    got = layer_weights(theirs)

    changed = [k for k in expected if not torch.equal(expected[k], original[k])]
    assert len(changed) == len(net.layers)  # one weight per module
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=2e-6), key
