"""Dataset configs: the sd-scripts TOML schema, value flow, errors, and the kohya folder convention."""

import pytest
from datagen import SMALL, noise_image, write

from lorakit.data import build_datasets, config_from_dict, config_from_folders, load_config
from lorakit.data.discover import parse_folder_name
from lorakit.data.schema import KEYS
from lorakit.errors import DatasetError


def toml_quote(path) -> str:
    return "'" + str(path) + "'"


@pytest.fixture
def kohya_tree(tmp_path):
    """train/10_sks dog (3 images, 2 captions), train/2_cat_toy (1 image), reg/1_dog (2 images)."""
    dog = tmp_path / "train" / "10_sks dog"
    noise_image(dog / "a.png", (64, 64), 1)
    noise_image(dog / "b.jpg", (96, 64), 2)
    noise_image(dog / "c.webp", (64, 96), 3)
    write(dog / "a.txt", "sks dog, sitting, grass")
    write(dog / "b.txt", "sks dog\nsecond line")
    toy = tmp_path / "train" / "2_cat_toy"
    noise_image(toy / "t.bmp", (80, 80), 4)
    reg = tmp_path / "reg" / "1_dog"
    noise_image(reg / "r1.png", (64, 64), 5)
    noise_image(reg / "r2.png", (64, 64), 6)
    return tmp_path


def summary(group):
    """(image path, repeats, raw caption, caption source, is_reg) of every record, sorted."""
    return sorted(
        (str(r.path), r.num_repeats, r.caption, r.caption_source, r.is_reg) for _, _, r in group.records()
    )


def test_folder_names():
    assert parse_folder_name("10_sks dog") == (10, "sks dog")
    assert parse_folder_name("2_cat_toy") == (2, "cat_toy")  # only the first underscore splits
    assert parse_folder_name("05_x") == (5, "x")
    assert parse_folder_name("sks_dog") is None
    assert parse_folder_name("10sks") is None


def test_kohya_tree_equals_equivalent_toml(kohya_tree, tmp_path):
    options = dict(SMALL, resolution=64, caption_extension=".txt", batch_size=2)
    from_folders = build_datasets(
        config_from_folders(kohya_tree / "train", kohya_tree / "reg", options=options)
    )

    toml = write(
        tmp_path / "ds.toml",
        f"""
[general]
caption_extension = ".txt"
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 16

[[datasets]]
resolution = 64
batch_size = 2

  [[datasets.subsets]]
  image_dir = {toml_quote(kohya_tree / "train" / "10_sks dog")}
  num_repeats = 10
  class_tokens = "sks dog"

  [[datasets.subsets]]
  image_dir = {toml_quote(kohya_tree / "train" / "2_cat_toy")}
  num_repeats = 2
  class_tokens = "cat_toy"

  [[datasets.subsets]]
  image_dir = {toml_quote(kohya_tree / "reg" / "1_dog")}
  is_reg = true
  num_repeats = 1
  class_tokens = "dog"
""",
    )
    from_toml = build_datasets(load_config(toml))

    expected = sorted(
        [
            (str(kohya_tree / "train/10_sks dog/a.png"), 10, "sks dog, sitting, grass", "file", False),
            (str(kohya_tree / "train/10_sks dog/b.jpg"), 10, "sks dog\nsecond line", "file", False),
            (str(kohya_tree / "train/10_sks dog/c.webp"), 10, "sks dog", "class_tokens", False),
            (str(kohya_tree / "train/2_cat_toy/t.bmp"), 2, "cat_toy", "class_tokens", False),
            # 3 x 10 + 1 x 2 = 32 training samples; 2 reg images looped to 32 -> 16 repeats each
            (str(kohya_tree / "reg/1_dog/r1.png"), 16, "dog", "class_tokens", True),
            (str(kohya_tree / "reg/1_dog/r2.png"), 16, "dog", "class_tokens", True),
        ]
    )
    assert summary(from_folders) == expected
    assert summary(from_toml) == expected
    assert from_folders.steps_per_epoch == from_toml.steps_per_epoch
    assert from_folders.bucket_histogram() == from_toml.bucket_histogram()
    captions = lambda g: [b.captions for b in g.iter_epoch(1)]  # noqa: E731
    assert captions(from_folders) == captions(from_toml)


def test_values_flow_general_dataset_subset(tmp_path):
    raw = {
        "general": {"shuffle_caption": True, "keep_tokens": 1, "resolution": 512, "flip_aug": True},
        "datasets": [
            {
                "keep_tokens": 2,
                "resolution": [768, 512],
                "subsets": [
                    {"image_dir": "a", "keep_tokens": 3},
                    {"image_dir": "b"},
                ],
            },
            {"subsets": [{"image_dir": "c", "flip_aug": False}]},
        ],
    }
    config = config_from_dict(raw, defaults={"caption_extension": ".txt", "keep_tokens": 9, "batch_size": 4})
    (a, b), (c,) = (ds.subsets for ds in config.datasets)
    assert (a.keep_tokens, b.keep_tokens, c.keep_tokens) == (3, 2, 1)  # subset > dataset > general > option
    assert a.shuffle_caption and b.shuffle_caption and c.shuffle_caption
    assert (a.flip_aug, c.flip_aug) == (True, False)
    assert a.caption_extension == ".txt"  # from the command-line option
    assert config.datasets[0].resolution == (768, 512)
    assert config.datasets[1].resolution == (512, 512)
    assert config.datasets[1].batch_size == 4


def test_every_sd_scripts_key_is_accepted(tmp_path):
    subset = {
        "image_dir": "x", "is_reg": False, "alpha_mask": True, "num_repeats": 3, "class_tokens": "c",
        "caption_extension": ".txt", "cache_info": True, "shuffle_caption": True, "keep_tokens": 1,
        "keep_tokens_separator": "|||", "secondary_separator": ";;;", "caption_separator": ",",
        "enable_wildcard": True, "caption_prefix": "p", "caption_suffix": "s", "token_warmup_min": 1,
        "token_warmup_step": 0.5, "custom_attributes": {"k": 1}, "resize_interpolation": "lanczos",
        "caption_dropout_rate": 0.1, "caption_dropout_every_n_epochs": 2, "caption_tag_dropout_rate": 0.1,
        "color_aug": True, "flip_aug": True, "face_crop_aug_range": [0.3, 0.6], "random_crop": True,
    }  # fmt: skip
    dataset = {
        "batch_size": 2, "resolution": [512, 768], "enable_bucket": True, "min_bucket_reso": 256,
        "max_bucket_reso": 1024, "bucket_reso_steps": 64, "bucket_no_upscale": True, "network_multiplier": 0.5,
        "validation_seed": 1, "validation_split": 0.1,
    }  # fmt: skip
    config = config_from_dict(
        {"datasets": [{**dataset, "subsets": [subset]}, {"subsets": [{"metadata_file": "m.json"}]}]}
    )
    s = config.datasets[0].subsets[0]
    for k, v in subset.items():
        got = getattr(s, k)
        assert (list(got) if isinstance(got, tuple) else str(got) if k == "image_dir" else got) == v, k
    for k, v in dataset.items():
        got = getattr(config.datasets[0], k)
        assert (list(got) if isinstance(got, tuple) else got) == v, k
    # the reference's key lists, all present
    assert set(subset) | set(dataset) | {"metadata_file", "conditioning_data_dir"} <= set(KEYS)


def test_mixing_dreambooth_and_fine_tuning_subsets_is_an_error():
    with pytest.raises(DatasetError, match="mixes subsets with image_dir only"):
        config_from_dict({"datasets": [{"subsets": [{"image_dir": "a"}, {"metadata_file": "m.json"}]}]})


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeat = 3", "unknown key 'num_repeat'. Did you mean 'num_repeats'?"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nbatch_size = 3", "'batch_size' cannot be set here; move it to [general] or [[datasets]]"),
        ("[general]\nimage_dir = 'x'\n[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'", "'image_dir' cannot be set here; move it to [[datasets.subsets]]"),
        ("[[datasets]]\n[[datasets.subsets]]\nnum_repeats = 2", "image_dir is missing. Add image_dir = "),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeats = '10'", "num_repeats must be a whole number; write 10 without quotes"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nflip_aug = 'yes'", "flip_aug must be true or false"),
        ("[[datasets]]\nresolution = [512]\n[[datasets.subsets]]\nimage_dir='x'", "resolution must be a number like 512 or a pair"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\ncaption_dropout_rate = 5", "caption_dropout_rate must be between 0 and 1"),
        ("[[dataset]]\n[[dataset.subsets]]\nimage_dir='x'", "unknown table 'dataset'. Did you mean 'datasets'?"),
        ("[datasets]\n[datasets.subsets]\nimage_dir='x'", "write [[datasets]] (two brackets)"),
        ("[[datasets]]\nresolution = 512\nmin_bucket_reso = 640\nenable_bucket = true\n[[datasets.subsets]]\nimage_dir='x'", "min_bucket_reso (640) is larger than the resolution"),
        ("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_config_errors_name_the_place_and_the_fix(tmp_path, toml, message):
    path = write(tmp_path / "bad.toml", toml)
    with pytest.raises(DatasetError) as e:
        load_config(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_all_config_errors_are_reported_together(tmp_path):
    path = write(
        tmp_path / "bad.toml",
        "[general]\nshufle_caption = true\n[[datasets]]\nbatch_sise = 2\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeat=1\n",
    )
    with pytest.raises(DatasetError) as e:
        load_config(path)
    text = str(e.value)
    assert "3 problem(s)" in text
    assert "[general]: unknown key 'shufle_caption'. Did you mean 'shuffle_caption'?" in text
    assert "[[datasets]] #1: unknown key 'batch_sise'. Did you mean 'batch_size'?" in text
    assert "[[datasets]] #1 → [[datasets.subsets]] #1: unknown key 'num_repeat'" in text


def test_relative_image_dir_beside_the_config(tmp_path, monkeypatch):
    noise_image(tmp_path / "cfg" / "imgs" / "a.png", (64, 64))
    path = write(
        tmp_path / "cfg" / "ds.toml",
        "[[datasets]]\nresolution=64\n[[datasets.subsets]]\nimage_dir='imgs'\nclass_tokens='x'\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.datasets[0].subsets[0].image_dir == tmp_path / "cfg" / "imgs"
    assert any("relative to the config file" in p.message for p in config.problems)


def test_folder_without_repeats_is_reported_with_the_fix(tmp_path):
    noise_image(tmp_path / "train" / "sks_dog" / "a.png", (64, 64))
    noise_image(tmp_path / "train" / "5_cat" / "b.png", (64, 64))
    config = config_from_folders(tmp_path / "train", options={"resolution": 64})
    assert [s.name for s in config.datasets[0].subsets] == ["5_cat"]
    (problem,) = config.problems.errors
    assert problem.path == tmp_path / "train" / "sks_dog"
    assert "Rename it to '10_sks_dog'" in problem.message
    with pytest.raises(DatasetError, match="Rename it to '10_sks_dog'"):
        build_datasets(config)


def test_train_dir_pointing_at_the_images_themselves(tmp_path):
    noise_image(tmp_path / "imgs" / "a.png", (64, 64))
    config = config_from_folders(tmp_path / "imgs", options={"resolution": 64})
    assert "lie directly in train_data_dir" in config.problems.errors[0].message
    assert str(tmp_path / "imgs" / "10_name") in config.problems.errors[0].message


def test_image_folder_given_as_train_dir_suggests_its_parent(tmp_path):
    noise_image(tmp_path / "10_sks" / "a.png", (64, 64))
    config = config_from_folders(tmp_path / "10_sks", options={"resolution": 64})
    assert f"give its parent folder {tmp_path} instead" in config.problems.errors[0].message


def test_the_same_folder_twice_is_a_warning(tmp_path):
    noise_image(tmp_path / "imgs" / "a.png", (64, 64))
    (tmp_path / "link").symlink_to(tmp_path / "imgs")
    subsets = [
        {"image_dir": str(tmp_path / "imgs"), "class_tokens": "x"},
        {"image_dir": str(tmp_path / "link"), "class_tokens": "y"},
    ]
    group = build_datasets(config_from_dict({"datasets": [{"resolution": 64, "subsets": subsets}]}))
    (w,) = group.problems.warnings
    assert w.path == tmp_path / "link" and "its images are used twice" in w.message


def test_resolution_is_an_area_and_the_shrink_is_reported(tmp_path):
    # 64x96 at resolution 64 with buckets: area 4096, so the bucket is 48x80 (not 64x96)
    noise_image(tmp_path / "imgs" / "tall.png", (128, 192))
    raw = {
        "datasets": [
            {
                "resolution": 64,
                **SMALL,
                "subsets": [{"image_dir": str(tmp_path / "imgs"), "class_tokens": "x"}],
            }
        ]
    }
    group = build_datasets(config_from_dict(raw))
    (record,) = [r for _, _, r in group.records()]
    assert record.bucket.reso == (48, 80)
    notes = [p.message for p in group.problems if "an area, not a side" in p.message]
    assert notes == [
        "[[datasets]] #1: 1 image(s) are scaled below 3/4 of their size to fit resolution 64x64 (an area, not a side), e.g. tall.png: 128x192 -> bucket 48x80"
    ]


def test_windows_path_in_double_quotes_is_caught(tmp_path):
    # "C:\train\new" in double quotes: TOML turns \t and \n into a tab and a line break
    path = write(tmp_path / "win.toml", '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "C:\\train\\new"\n')
    with pytest.raises(DatasetError, match="image_dir contains a tab or line break") as e:
        load_config(path)
    assert "single quotes" in str(e.value)
