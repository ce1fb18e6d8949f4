"""The faster paths of issue #22 keep the numbers: each one against the path it replaces, on the
tiny model, within a stated float tolerance."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import make_folder_dataset, write_config

from lorakit.training import recipe, session, setup, step
from lorakit.training.config import load_config

TINY = Path(__file__).parents[1] / "src" / "lorakit" / "quickstart" / "lorakit-tiny.safetensors"


def tiny_run(tmp_path: Path, name: str, extra: str = "") -> dict[str, torch.Tensor]:
    """A LoRA trained for 20 steps on the tiny model, latents cached."""
    folders = make_folder_dataset(tmp_path / name, images=3, repeats=2)
    out = (tmp_path / name / "out").as_posix()
    body = (
        f'train_data_dir = \'{folders.as_posix()}\'\ncaption_extension = ".txt"\nresolution = "32"\n'
        "bucket_reso_steps = 32\nmax_train_steps = 20\nseed = 3\ncache_latents = true\nnetwork_dim = 4\n"
        f"network_alpha = 2\nlearning_rate = 1e-3\nlog_with = \"none\"\noutput_dir = '{out}'\n{extra}"
    )
    result = recipe.train(load_config(write_config(tmp_path / f"{name}.toml", TINY, body)), quiet=True)
    return load_file(result.final_file)


def test_freeing_the_vae_after_caching_keeps_the_lora_bit_for_bit(tmp_path, monkeypatch):
    """The VAE's weights go once the latents are cached; the trained LoRA is the same."""
    freed = []

    def release(config, model, method_name, log):
        setup.release_vae(config, model, method_name, log)
        freed.append(all(p.device.type == "meta" for p in model.vae.parameters()))

    monkeypatch.setattr(session, "release_vae", release)
    with_release = tiny_run(tmp_path, "freed")
    assert freed == [True]
    monkeypatch.setattr(session, "release_vae", lambda *_: None)
    kept = tiny_run(tmp_path, "kept")
    assert kept.keys() == with_release.keys()
    for key in kept:
        assert torch.equal(kept[key], with_release[key]), key


def test_the_vae_stays_where_previews_need_it(tmp_path):
    """Kept for previews, for latents encoded each step and for DreamBooth's whole-model file."""
    from lorakit.models.tiny import random_model

    model = random_model("sd1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks")
    config = load_config(None, {"pretrained_model_name_or_path": str(TINY), "cache_latents": True,
                                "sample_prompts": str(prompts)})  # fmt: skip
    setup.release_vae(config, model, "lora", print)
    assert model.vae.device.type == "cpu"
    setup.release_vae(load_config(None, {"pretrained_model_name_or_path": str(TINY)}), model, "lora", print)
    assert model.vae.device.type == "cpu"  # latents not cached: the VAE encodes every step
    cached = load_config(None, {"pretrained_model_name_or_path": str(TINY), "cache_latents": True})
    setup.release_vae(cached, model, "dreambooth", print)  # saves the whole model, VAE included
    assert model.vae.device.type == "cpu"
    setup.release_vae(cached, model, "lora", print)
    assert model.vae.device.type == "meta"


def test_the_guard_reference_in_one_call_equals_the_validation_measure(tmp_path, monkeypatch):
    """The collapse guard's untrained loss, its four timesteps batched into one U-Net call,
    equals the validation measure over the same batch, timestep by timestep (1e-5 relative)."""
    seen = []

    def both(ctx, group, seed, runtime):
        batched = step.untrained_loss(ctx, group, seed, runtime)
        one_by_one = step.validation_loss(
            ctx, group, step.ValidationOptions(max_validation_steps=1), seed, runtime
        )
        seen.append((batched, one_by_one))
        return batched

    monkeypatch.setattr(session, "untrained_loss", both)
    folders = make_folder_dataset(tmp_path, images=3, repeats=1)
    body = (
        f'train_data_dir = \'{folders.as_posix()}\'\ncaption_extension = ".txt"\nresolution = "32"\n'
        f"bucket_reso_steps = 32\nmax_train_steps = 1\ntrain_batch_size = 2\nmin_snr_gamma = 5\n"
        f"log_with = \"none\"\noutput_dir = '{(tmp_path / 'out').as_posix()}'\n"
    )
    recipe.train(load_config(write_config(tmp_path / "c.toml", TINY, body)), quiet=True, save_files=False)
    ((batched, one_by_one),) = seen
    assert batched == pytest.approx(one_by_one, rel=1e-5)
    assert torch.isfinite(torch.tensor(batched))
