"""Text-encoder output cache: only for static captions, one encode per distinct caption, reuse."""

import pytest
import torch
from datagen import noise_image, write

from lorakit.data import build_datasets, config_from_dict
from lorakit.data.text_cache import TextOutputCache
from lorakit.errors import DatasetError


class FakeEncoder:
    """Outputs derived from the caption text, and a count of the captions encoded."""

    def __init__(self):
        self.calls = []

    def __call__(self, captions):
        self.calls += captions
        codes = torch.tensor([[float(sum(map(ord, c))), float(len(c))] for c in captions])
        return {"hidden_state1": codes[:, None, :].repeat(1, 3, 1), "pool2": codes}


def make(tmp_path, **subset):
    d = tmp_path / "2_x"
    if not d.exists():
        for i in range(4):
            noise_image(d / f"{i}.png", (64, 64), i)
        write(d / "0.caption", "a cat")
        write(d / "1.caption", "a dog")
        write(d / "2.caption", "a cat")  # the same caption as 0.png
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "batch_size": 2,
                "subsets": [{"image_dir": str(d), "class_tokens": "x", **subset}],
            }
        ]
    }
    return build_datasets(config_from_dict(raw))


def expected(caption):
    return torch.tensor([float(sum(map(ord, caption))), float(len(caption))])


def test_memory_cache_encodes_each_distinct_caption_once(tmp_path):
    group = make(tmp_path, caption_prefix="photo of")
    enc = FakeEncoder()
    cache = TextOutputCache(enc, "enc-v1")
    stats = cache.prefill(group)
    assert sorted(enc.calls) == ["photo of a cat", "photo of a dog", "photo of x"]
    assert stats.encoded == 3
    for batch in group.iter_epoch(1):
        outputs = cache.lookup(batch.captions)
        assert outputs["hidden_state1"].shape == (len(batch.captions), 3, 2)
        for caption, pool in zip(batch.captions, outputs["pool2"]):
            assert torch.equal(pool, expected(caption))
    assert enc.calls == ["photo of a cat", "photo of a dog", "photo of x"]  # nothing encoded again


def test_disk_cache_is_reused_and_a_changed_caption_is_encoded_alone(tmp_path):
    enc = FakeEncoder()
    assert TextOutputCache(enc, "enc-v1").prefill(make(tmp_path), to_disk=True).written == 4
    assert (tmp_path / "2_x" / "0_te_outputs.npz").is_file()
    enc.calls.clear()
    stats = TextOutputCache(enc, "enc-v1").prefill(make(tmp_path), to_disk=True)
    assert (stats.encoded, stats.reused, enc.calls) == (0, 4, [])
    write(tmp_path / "2_x" / "1.caption", "a bird")
    stats = TextOutputCache(enc, "enc-v1").prefill(make(tmp_path), to_disk=True)
    assert (stats.encoded, stats.reused, enc.calls) == (1, 3, ["a bird"])
    enc.calls.clear()
    assert TextOutputCache(enc, "enc-v2").prefill(make(tmp_path), to_disk=True).encoded == 3  # other encoders


@pytest.mark.parametrize(
    "option", [{"shuffle_caption": True}, {"caption_dropout_rate": 0.1}, {"enable_wildcard": True}]
)
def test_changing_captions_cannot_be_cached(tmp_path, option):
    with pytest.raises(DatasetError, match=f"{next(iter(option))}"):
        TextOutputCache(FakeEncoder(), "enc").prefill(make(tmp_path, **option))
