"""The dataset group: repeats, regularization, loss weights, order per (seed, epoch), resume,
SDXL conditioning, flips and masks, validation split."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from datagen import SMALL, noise_image, write
from PIL import Image

from lorakit.data import DataState, build_datasets, config_from_dict, config_from_folders
from lorakit.errors import DatasetError


def folder_group(tmp_path, n_train=2, repeats=3, n_reg=0, seed=0, **options):
    for i in range(n_train):
        noise_image(tmp_path / "train" / f"{repeats}_sks" / f"t{i}.png", (64, 64), i)
    reg = None
    if n_reg:
        reg = tmp_path / "reg"
        for i in range(n_reg):
            noise_image(reg / "1_dog" / f"r{i}.png", (64, 64), 100 + i)
    options = {"resolution": 64, **options}
    config = config_from_folders(tmp_path / "train", reg, options=options)
    return build_datasets(config, seed=seed, prior_loss_weight=0.25)


def test_regularization_images_are_looped_to_the_training_count(tmp_path):
    # 2 training images x 3 repeats = 6 samples. 4 reg images: the first pass gives each 1 (4),
    # the second adds one to r0 and r1 (6) and stops -> repeats 2, 2, 1, 1.
    group = folder_group(tmp_path, n_train=2, repeats=3, n_reg=4)
    reg = {r.path.name: r.num_repeats for _, _, r in group.records() if r.is_reg}
    assert reg == {"r0.png": 2, "r1.png": 2, "r2.png": 1, "r3.png": 1}
    assert group.steps_per_epoch == 12


def test_surplus_regularization_images_are_left_out(tmp_path):
    # 2 x 1 = 2 training samples; only the first 2 of 5 reg images are needed (as in sd-scripts)
    group = folder_group(tmp_path, n_train=2, repeats=1, n_reg=5)
    assert sorted(r.path.name for _, _, r in group.records() if r.is_reg) == ["r0.png", "r1.png"]


def test_an_empty_reg_data_dir_means_none(tmp_path, monkeypatch):
    # sd-scripts reads reg_data_dir = "" as "no regularization"; it must not become the cwd
    noise_image(tmp_path / "train" / "3_sks" / "t0.png", (64, 64), 0)
    monkeypatch.chdir(tmp_path)
    config = config_from_folders(tmp_path / "train", "", options={"resolution": 64})
    assert not config.problems.errors
    group = build_datasets(config, seed=0)
    assert [r.is_reg for _, _, r in group.records()] == [False]


def test_loss_weights_and_repeats_per_epoch(tmp_path):
    group = folder_group(tmp_path, n_train=2, repeats=3, n_reg=4, batch_size=2)
    seen: Counter = Counter()
    for batch in group.iter_epoch(1):
        for path, w, reg in zip(batch.paths, batch.loss_weights.tolist(), batch.is_reg):
            seen[path.name] += 1
            assert w == (0.25 if reg else 1.0)
            assert reg == path.name.startswith("r")
    assert seen == {"t0.png": 3, "t1.png": 3, "r0.png": 2, "r1.png": 2, "r2.png": 1, "r3.png": 1}


def test_order_depends_only_on_seed_and_epoch(tmp_path):
    group = folder_group(tmp_path, n_train=6, repeats=2, seed=5, batch_size=2)
    again = folder_group(tmp_path, n_train=6, repeats=2, seed=5, batch_size=2)
    other = folder_group(tmp_path, n_train=6, repeats=2, seed=6, batch_size=2)
    order = lambda g, e: [ref.items for ref in g.epoch_batches(e)]  # noqa: E731
    assert order(group, 1) == order(again, 1)
    assert order(group, 1) != order(group, 2)
    assert order(group, 1) != order(other, 1)
    # every sample once per repeat, whatever the order
    for e in (1, 2, 3):
        assert Counter(i for items in order(group, e) for i in items) == {i: 2 for i in range(6)}


def test_resume_mid_epoch_gives_the_same_batches(tmp_path):
    for i in range(5):
        noise_image(tmp_path / "2_x" / f"{i}.png", (64, 64), i)
        write(tmp_path / "2_x" / f"{i}.caption", "a, b, c, d, e, f")
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "batch_size": 2,
                "subsets": [
                    {
                        "image_dir": str(tmp_path / "2_x"),
                        "num_repeats": 2,
                        "shuffle_caption": True,
                        "flip_aug": True,
                        "random_crop": True,
                        "color_aug": True,
                    }
                ],
            }
        ]
    }
    first = build_datasets(config_from_dict(raw), seed=3)
    full = list(first.iter_epoch(2))
    state = first.state(epoch=2, batches_done=3).to_dict()

    resumed = build_datasets(config_from_dict(raw), seed=3)  # a new process, as after a restart
    epoch, start = resumed.resume_position(DataState.from_dict(state))
    assert (epoch, start) == (2, 3)
    rest = list(resumed.iter_epoch(epoch, start))
    assert len(rest) == len(full) - 3
    for a, b in zip(full[3:], rest):
        assert a.captions == b.captions and a.flipped == b.flipped
        assert torch.equal(a.images, b.images)
    # the DataLoader path gives the same batches
    loaded = list(resumed.loader(2, start=3))
    assert [b.captions for b in loaded] == [b.captions for b in rest]
    # a finished epoch resumes at the next one
    assert resumed.resume_position(first.state(2, first.steps_per_epoch)) == (3, 0)


def test_resume_refuses_a_changed_dataset(tmp_path):
    group = folder_group(tmp_path, n_train=3)
    state = group.state(1, 2)
    noise_image(tmp_path / "train" / "3_sks" / "new.png", (64, 64), 9)
    changed = build_datasets(config_from_folders(tmp_path / "train", options={"resolution": 64}))
    with pytest.raises(DatasetError, match="changed since the training state was saved"):
        changed.resume_position(state)
    assert changed.resume_position(state, strict=False) == (1, 2)


def test_images_sdxl_conditioning_random_crop_and_flip(tmp_path):
    # 96x48 into a single 64x64 bucket: heights match, scale 64/48 -> 128x64; 64 columns are cut
    src = noise_image(tmp_path / "1_x" / "wide.png", (96, 48), 1)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "subsets": [
                    {
                        "image_dir": str(tmp_path / "1_x"),
                        "class_tokens": "x",
                        "random_crop": True,
                        "flip_aug": True,
                    }
                ],
            }
        ]
    }
    group = build_datasets(config_from_dict(raw), seed=0)
    scaled = np.asarray(Image.open(src).convert("RGB").resize((128, 64), Image.Resampling.LANCZOS))
    seen_flip = set()
    for epoch in range(1, 13):
        batch = next(group.iter_epoch(epoch))
        assert batch.original_sizes_hw.tolist() == [[48, 96]]
        assert batch.target_sizes_hw.tolist() == [[64, 64]]
        top, left = batch.crop_top_lefts[0].tolist()
        assert top == 0 and 0 <= left <= 64
        pixels = np.round((batch.images[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        if batch.flipped[0]:
            # SDXL crop is counted on the flipped image: the window starts at 128 - 64 - left
            window = scaled[:, ::-1][:, left : left + 64]
        else:
            window = scaled[:, left : left + 64]
        np.testing.assert_array_equal(pixels, window)
        seen_flip.add(batch.flipped[0])
    assert seen_flip == {True, False}


def test_alpha_mask_in_batches(tmp_path):
    noise_image(tmp_path / "1_x" / "a.png", (64, 64), 1, mode="RGBA")  # left half transparent
    noise_image(tmp_path / "1_x" / "b.png", (64, 64), 2)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "batch_size": 2,
                "subsets": [{"image_dir": str(tmp_path / "1_x"), "class_tokens": "x", "alpha_mask": True}],
            }
        ]
    }
    batch = next(build_datasets(config_from_dict(raw)).iter_epoch(1))
    assert batch.alpha_masks.shape == (2, 1, 64, 64)
    for mask, path in zip(batch.alpha_masks, batch.paths):
        if path.name == "a.png":
            assert (mask[0, :, :32] == 0).all() and (mask[0, :, 32:] == 1).all()
        else:
            assert (mask == 1).all()
    # without alpha_mask the transparent half is white (1.0 in [-1, 1])
    raw["datasets"][0]["subsets"][0]["alpha_mask"] = False
    batch = next(build_datasets(config_from_dict(raw)).iter_epoch(1))
    assert batch.alpha_masks is None
    a = batch.images[batch.paths.index(tmp_path / "1_x" / "a.png")]
    assert (a[:, :, :32] == 1.0).all()


def test_validation_split(tmp_path):
    for i in range(10):
        noise_image(tmp_path / "1_x" / f"{i}.png", (64, 64), i)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "validation_split": 0.2,
                "validation_seed": 4,
                "subsets": [{"image_dir": str(tmp_path / "1_x"), "class_tokens": "x"}],
            }
        ]
    }
    train = build_datasets(config_from_dict(raw))
    val = build_datasets(config_from_dict(raw), split="validation")
    names = lambda g: {r.path.name for _, _, r in g.records()}  # noqa: E731
    assert len(names(val)) == 2 and len(names(train)) == 8
    assert not names(val) & names(train)
    assert names(build_datasets(config_from_dict(raw), split="validation")) == names(val)


def test_network_multiplier_and_custom_attributes_reach_the_batch(tmp_path):
    noise_image(tmp_path / "1_x" / "a.png", (64, 64), 1)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "network_multiplier": 0.5,
                "subsets": [
                    {
                        "image_dir": str(tmp_path / "1_x"),
                        "class_tokens": "x",
                        "custom_attributes": {"style": 1},
                    }
                ],
            }
        ]
    }
    batch = next(build_datasets(config_from_dict(raw)).iter_epoch(1))
    assert batch.network_multiplier == 0.5
    assert batch.custom_attributes == [{"style": 1}]


def test_face_crop_keeps_the_face_in_the_window(tmp_path):
    # a 200x200 image with a 20x20 white square (the "face") centred at (150, 50)
    a = np.zeros((200, 200, 3), np.uint8)
    a[40:60, 140:160] = 255
    path = tmp_path / "1_x" / "img_150_50_20_20.png"
    path.parent.mkdir()
    Image.fromarray(a).save(path)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "subsets": [
                    {
                        "image_dir": str(tmp_path / "1_x"),
                        "class_tokens": "x",
                        "face_crop_aug_range": [0.2, 0.4],
                    }
                ],
            }
        ]
    }
    group = build_datasets(config_from_dict(raw))
    for epoch in range(1, 6):
        img = next(group.iter_epoch(epoch)).images[0]
        white = (img > 0.5).all(0)
        ys, xs = torch.nonzero(white, as_tuple=True)
        # a small face is never enlarged (scale capped at 1), so the window is cut around it: the
        # face lands in the middle (a plain centre crop would put it at about (48, 16))
        assert len(ys) > 0
        assert abs(xs.float().mean() - 32) <= 10 and abs(ys.float().mean() - 32) <= 10


def test_random_state_is_not_shared_with_global_random(tmp_path):
    group = folder_group(tmp_path, n_train=4, repeats=1, shuffle_caption=True)
    random.seed(1)
    a = [ref.items for ref in group.epoch_batches(1)]
    random.seed(2)
    assert a == [ref.items for ref in group.epoch_batches(1)]


def test_bucketed_dataset_histogram_matches_records(tmp_path):
    for i, size in enumerate([(64, 64), (96, 48), (96, 48), (48, 96)]):
        noise_image(tmp_path / "2_x" / f"{i}.png", size, i)
    group = build_datasets(
        config_from_dict(
            {
                "datasets": [
                    {
                        "resolution": 64,
                        **SMALL,
                        "subsets": [
                            {"image_dir": str(tmp_path / "2_x"), "num_repeats": 2, "class_tokens": "x"}
                        ],
                    }
                ]
            }
        )
    )
    expected = Counter()
    for _, _, r in group.records():
        expected[r.bucket.reso] += 2
    assert group.bucket_histogram() == dict(expected)
