"""Latent cache: sd-scripts file names and keys, reuse by content, re-encoding only what changed."""

import os
import re

import numpy as np
import pytest
import torch
from datagen import noise_image

from lorakit.data import build_datasets, config_from_dict
from lorakit.data.latent_cache import cache_latents, npz_path
from lorakit.errors import DatasetError
from lorakit.models.tiny import random_model


@pytest.fixture(scope="module")
def vae():
    return random_model("sd1").vae


@pytest.fixture(scope="module")
def other_vae():
    return random_model("sd1", seed=1).vae


class CountingVAE(torch.nn.Module):
    """Wraps a VAE and counts the images it encodes."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.config = vae.config
        self.images = 0

    def encode(self, x):
        self.images += x.shape[0]
        return self.vae.encode(x)

    def state_dict(self, *a, **k):
        return self.vae.state_dict(*a, **k)


def make(tmp_path, flip=False, **subset):
    folder = tmp_path / "5_x"
    if not folder.exists():
        for i, size in enumerate([(64, 64), (96, 48), (48, 96)]):
            noise_image(folder / f"{i}.png", size, i)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "enable_bucket": True,
                "min_bucket_reso": 32,
                "max_bucket_reso": 128,
                "bucket_reso_steps": 16,
                "subsets": [{"image_dir": str(folder), "class_tokens": "x", "flip_aug": flip, **subset}],
            }
        ]
    }
    return build_datasets(config_from_dict(raw))


def test_second_run_encodes_nothing_and_a_changed_image_alone_is_encoded(tmp_path, vae):
    counting = CountingVAE(vae)
    stats = cache_latents(make(tmp_path), counting, to_disk=True)
    assert (stats.encoded, stats.reused, counting.images) == (3, 0, 3)

    counting.images = 0
    stats = cache_latents(make(tmp_path), counting, to_disk=True)  # a new run
    assert (stats.encoded, stats.reused, counting.images) == (0, 3, 0)

    os.utime(tmp_path / "5_x" / "0.png", (1, 1))  # only the time changes: the content is the same
    assert cache_latents(make(tmp_path), counting, to_disk=True).encoded == 0

    noise_image(tmp_path / "5_x" / "1.png", (96, 48), seed=99)  # new pixels, same size and name
    counting.images = 0
    stats = cache_latents(make(tmp_path), counting, to_disk=True)
    assert (stats.encoded, stats.reused, counting.images) == (1, 2, 1)


def test_file_names_and_keys_follow_sd_scripts(tmp_path, vae):
    group = make(tmp_path, flip=True)
    cache_latents(group, vae, to_disk=True)
    names = sorted(p.name for p in (tmp_path / "5_x").glob("*.npz"))
    for _, _, r in group.records():
        w, h = r.bucket.reso
        assert f"{r.path.stem}_{w:04d}x{h:04d}_sd.npz" in names
    assert all(re.fullmatch(r"\d_\d{4}x\d{4}_sd\.npz", n) for n in names) and len(names) == 3
    assert npz_path(tmp_path / "a.png", (1024, 768), sdxl=True).name == "a_1024x0768_sdxl.npz"
    for _, _, r in group.records():
        with np.load(npz_path(r.path, r.bucket.reso, False)) as f:
            assert {"latents", "latents_flipped", "original_size", "crop_ltrb", "lorakit_key"} <= set(f.files)
            w, h = r.bucket.reso
            # the tiny VAE halves each side: 2 ** (len(block_out_channels) - 1)
            assert f["latents"].shape == (4, h // 2, w // 2)
            assert tuple(f["original_size"]) == r.size
            left, top, right, bottom = f["crop_ltrb"]
            assert (right - left, bottom - top) == (w, h)
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temporary files


def test_cached_latents_equal_direct_encoding_and_flips_use_the_flipped_image(tmp_path, vae):
    group = make(tmp_path, flip=True)
    cache_latents(group, vae)  # in memory
    direct = make(tmp_path, flip=True)
    seen = set()
    for epoch in range(1, 6):
        for ref, batch in zip(group.epoch_batches(epoch), group.iter_epoch(epoch)):
            assert batch.images is None
            image_batch = direct.load_batch(ref)  # the same flips: both derive them from (seed, epoch)
            assert image_batch.flipped == batch.flipped
            with torch.no_grad():
                expected = vae.encode(image_batch.images).latent_dist.mode()
            torch.testing.assert_close(batch.latents, expected, atol=1e-5, rtol=1e-4)
            assert torch.equal(batch.crop_top_lefts, image_batch.crop_top_lefts)
            seen.update(batch.flipped)
    assert seen == {True, False}


def test_another_vae_or_turning_on_flip_encodes_again(tmp_path, vae, other_vae):
    cache_latents(make(tmp_path), vae, to_disk=True)
    assert cache_latents(make(tmp_path), other_vae, to_disk=True).encoded == 3
    assert cache_latents(make(tmp_path, flip=True), other_vae, to_disk=True).encoded == 3  # flipped missing
    assert cache_latents(make(tmp_path, flip=False), other_vae, to_disk=True).encoded == 0  # flipped is extra


@pytest.mark.parametrize("option", [{"color_aug": True}, {"random_crop": True}])
def test_caching_refuses_augmentations_that_change_each_time(tmp_path, vae, option):
    with pytest.raises(DatasetError, match="flip_aug works with caching"):
        cache_latents(make(tmp_path, **option), vae)


def test_sd_scripts_own_files_are_read_not_encoded_again(tmp_path, vae):
    """sd-scripts stores no lorakit key: its files are used when their shape (and flip) fit and
    they are not older than the image; an image changed after its file is encoded again."""
    group = make(tmp_path, flip=True)
    for _, _, r in group.records():
        w, h = r.bucket.reso
        np.savez(
            npz_path(r.path, r.bucket.reso, False),
            latents=np.full((4, h // 2, w // 2), 7.0, np.float32),
            latents_flipped=np.full((4, h // 2, w // 2), -7.0, np.float32),
            original_size=np.array(r.size),
            crop_ltrb=np.array([0, 0, w, h]),
        )
    counting = CountingVAE(vae)
    stats = cache_latents(group, counting, to_disk=True)
    assert (stats.encoded, stats.reused, stats.foreign, counting.images) == (0, 3, 3, 0)
    for entry in group.latents.values():
        cached = entry.load()
        assert (cached.latents == 7.0).all() and (cached.latents_flipped == -7.0).all()

    later = npz_path(group.datasets[0].records[0].path, group.datasets[0].records[0].bucket.reso, False)
    os.utime(group.datasets[0].records[0].path, (later.stat().st_mtime + 10,) * 2)  # edited after
    stats = cache_latents(make(tmp_path, flip=True), counting, to_disk=True)
    assert (stats.encoded, stats.reused, stats.foreign) == (1, 2, 2)
    stats = cache_latents(make(tmp_path, flip=True), counting, to_disk=True)  # now our own file
    assert (stats.encoded, stats.reused, stats.foreign) == (0, 3, 2)
