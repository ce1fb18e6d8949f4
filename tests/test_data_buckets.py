"""Buckets: the sd-scripts algorithm worked by hand, and batches that never mix buckets."""

import random

import numpy as np
import pytest
from datagen import noise_image
from PIL import Image

from lorakit.data import build_datasets, config_from_dict
from lorakit.data.buckets import BucketSelector, crop_offset, make_bucket_resolutions, resize_and_crop

# resolution 512 -> max area 512*512 = 262144; min 256, max 1024, step 64.
# square: floor(sqrt(262144) / 64) * 64 = 512 -> (512, 512)
# for each width w = 256, 320, ..., 1024: h = min(1024, floor(262144 // w / 64) * 64), kept if h >= 256
#   w=256:  262144//256 = 1024 -> 1024        w=320: 262144//320 = 819 -> 768
#   w=384:  682 -> 640                        w=448: 585 -> 576
#   w=512:  512 -> 512                        w=576: 455 -> 448
#   w=640:  409 -> 384                        w=704: 372 -> 320
#   w=768:  341 -> 320                        w=832: 315 -> 256
#   w=896:  292 -> 256                        w=960: 273 -> 256
#   w=1024: 256 -> 256
# each (w, h) and (h, w) is a bucket.
LANDSCAPE = [(576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256)]
SD15_BUCKETS = sorted([(512, 512)] + LANDSCAPE + [(h, w) for w, h in LANDSCAPE])


def test_bucket_list_worked_by_hand():
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == SD15_BUCKETS
    assert len(SD15_BUCKETS) == 17


# (image size) -> (bucket, size after scaling), each worked by hand from the list above:
HAND_WORKED = [
    # 1000x500, ratio 2.0. Nearest ratios: 704/320 = 2.2 (error 0.2), 640/384 = 1.667 (0.333) -> 704x320.
    # 2.0 < 2.2, so the widths match: scale = 704/1000 = 0.704 -> 704 x int(500*0.704+0.5) = 704x352.
    ((1000, 500), (704, 320), (704, 352)),
    # 512x768, ratio 0.667. 384/640 = 0.6 (error 0.067), 448/576 = 0.778 (0.111) -> 384x640.
    # 0.667 > 0.6, so the heights match: scale = 640/768 -> int(512*0.8333+0.5) = 427 -> 427x640.
    ((512, 768), (384, 640), (427, 640)),
    # 300x300, ratio 1 -> 512x512; scale 512/300 -> 512x512 (enlarged).
    ((300, 300), (512, 512), (512, 512)),
    # 640x384 is a bucket itself: kept as it is.
    ((640, 384), (640, 384), (640, 384)),
    # 2000x100, ratio 20: widest bucket 1024x256 (ratio 4); heights match: scale 2.56 -> 5120x256.
    ((2000, 100), (1024, 256), (5120, 256)),
    # 1024x1000, ratio 1.024: 512x512 (error 0.024) beats 576/448 = 1.286; widths... ratio > 1, so
    # heights match: scale = 512/1000 -> int(1024*0.512+0.5) = 524 -> 524x512.
    ((1024, 1000), (512, 512), (524, 512)),
    # 900x1200, ratio 0.75: 448/576 = 0.778 (error 0.028) -> 448x576; 0.75 < 0.778, widths match:
    # scale = 448/900 -> 448 x int(1200*0.4978+0.5) = 448x597.
    ((900, 1200), (448, 576), (448, 597)),
]


@pytest.mark.parametrize("size, bucket, resized", HAND_WORKED)
def test_bucket_assignment_worked_by_hand(size, bucket, resized):
    choice = BucketSelector((512, 512), 256, 1024, 64).select(*size)
    assert choice.reso == bucket
    assert choice.resized_size == resized
    # scaling covers the bucket: both sides at least the bucket's
    assert resized[0] >= bucket[0] and resized[1] >= bucket[1]


def test_no_upscale_worked_by_hand():
    sel = BucketSelector((512, 512), steps=64, no_upscale=True)
    # 300x200: area 60000 <= 262144, not resized; bucket = sides cut to multiples of 64 -> 256x192
    c = sel.select(300, 200)
    assert (c.reso, c.resized_size) == ((256, 192), (300, 200))
    # 1000x800: area 800000 > 262144, ratio 1.25. Ideal size: w = sqrt(262144*1.25) = 572.43,
    # h = 262144/572.43 = 457.95.
    # Rounding the width: int(572.43+0.5) = 572 -> 512; height for it int(512/1.25+0.5) = 410 -> 384;
    #   ratio 512/384 = 1.333, error 0.083.
    # Rounding the height: int(457.95+0.5) = 458 -> 448; width for it int(448*1.25+0.5) = 560 -> 512;
    #   ratio 512/448 = 1.143, error 0.107.
    # The width wins: resized 512 x int(512/1.25+0.5) = 512x410; bucket 512 x (410 - 410 % 64) = 512x384.
    c = sel.select(1000, 800)
    assert (c.reso, c.resized_size) == ((512, 384), (512, 410))


def test_bucketing_off_is_one_bucket_at_the_resolution():
    sel = BucketSelector((512, 512), enable_bucket=False)
    # 1000x500: covering 512x512 needs the heights to match: scale 512/500 -> 1024x512
    c = sel.select(1000, 500)
    assert (c.reso, c.resized_size) == ((512, 512), (1024, 512))


def test_centre_and_random_crop_offsets():
    rng = random.Random(0)
    assert crop_offset((704, 352), (704, 320), False, rng) == (0, 16)  # (352-320)//2
    offsets = {crop_offset((704, 352), (704, 320), True, rng) for _ in range(200)}
    assert {o[0] for o in offsets} == {0}
    assert {o[1] for o in offsets} == set(range(0, 33))  # every top from 0 to 32 is drawn


def test_resize_and_crop_matches_an_independent_pil_computation():
    rgb = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    choice = BucketSelector((64, 64), 32, 128, 16).select(200, 100)
    # ratio 2: buckets at area 4096 with step 16 include 96x32 (3.0), 80x48 (1.667)... the selector
    # decides; here we check only that the pixels are the scaled image cut at the offset.
    left, top = crop_offset(choice.resized_size, choice.reso, False, random.Random(0))
    out, _ = resize_and_crop(rgb, None, choice, (left, top))
    expected = np.asarray(Image.fromarray(rgb).resize(choice.resized_size, Image.Resampling.BOX))
    bw, bh = choice.reso
    assert out.shape == (bh, bw, 3)
    np.testing.assert_array_equal(out, expected[top : top + bh, left : left + bw])


def test_every_batch_comes_from_one_bucket(tmp_path):
    sizes = [(64, 64), (96, 48), (48, 96), (80, 80), (128, 32), (60, 70), (90, 45)]
    for i, size in enumerate(sizes):
        noise_image(tmp_path / "imgs" / f"{i}.png", size, i)
    config = config_from_dict(
        {
            "datasets": [
                {
                    "resolution": 64,
                    "batch_size": 3,
                    "enable_bucket": True,
                    "min_bucket_reso": 32,
                    "max_bucket_reso": 128,
                    "bucket_reso_steps": 16,
                    "subsets": [{"image_dir": str(tmp_path / "imgs"), "class_tokens": "x", "num_repeats": 2}],
                }
            ]
        }
    )
    group = build_datasets(config)
    ds = group.datasets[0]
    expected = BucketSelector((64, 64), 32, 128, 16)
    for r in ds.records:
        assert r.bucket == expected.select(*r.size)
    refs = group.epoch_batches(1)
    # per bucket: ceil(images x 2 repeats / 3)
    per_bucket = {}
    for r in ds.records:
        per_bucket[r.bucket.reso] = per_bucket.get(r.bucket.reso, 0) + 2
    assert len(refs) == sum(-(-n // 3) for n in per_bucket.values()) == group.steps_per_epoch
    for ref in refs:
        assert {ds.records[i].bucket.reso for i in ref.items} == {ref.reso}
        batch = group.load_batch(ref)
        assert batch.images.shape[2:] == (ref.reso[1], ref.reso[0])
