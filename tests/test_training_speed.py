"""The faster paths of issue #22 keep the numbers: each one against the path it replaces, on the
tiny model, within a stated float tolerance."""

from pathlib import Path

import pytest
import torch
from training_helpers import make_folder_dataset, write_config

from lorakit.training import recipe, step
from lorakit.training.config import load_config

TINY = Path(__file__).parents[1] / "src" / "lorakit" / "quickstart" / "lorakit-tiny.safetensors"


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

    monkeypatch.setattr(recipe, "untrained_loss", both)
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
