"""Auto-tagging and captioning: WD14-family ONNX taggers and BLIP/Florence-2/GIT captioners.

One library for both faces (`lorakit tag`/`lorakit caption` and the web UI's dataset page):

    tagger = load_tagger(locate_tagger("wd-v1-4-convnext-tagger-v2"))
    tags = tagger.predict([rgb], TagOptions(general_threshold=0.35))   # [[Tag(name, score, category)]]
    result = tag_folder("train/10_sks", tagger, TagOptions(always_first_tags=["sks"]))

    captioner = load_captioner(locate_captioner("blip-large"))
    captions = captioner.caption([rgb])                                   # ["a dog on the grass"]
    result = caption_folder("train/10_sks", captioner, prefix="sks dog")
"""

from .captioners import FLORENCE_TASKS, Captioner, CaptionOptions, load_captioner
from .folder import FolderResult, caption_folder, find_images, merge_tags, tag_folder, with_prefix_suffix
from .models import (
    DEFAULT_CAPTIONER,
    DEFAULT_TAGGER,
    KNOWN_MODELS,
    KnownModel,
    ModelFilesMissing,
    format_model_list,
    locate_captioner,
    locate_tagger,
)
from .wd14 import (
    Label,
    Tag,
    TagChooser,
    TagOptions,
    WD14Tagger,
    area_resize,
    choose_tags,
    load_tagger,
    mcut_threshold,
    parse_tag_replacement,
    split_list,
    tagger_pixels,
)

__all__ = [
    "DEFAULT_CAPTIONER",
    "DEFAULT_TAGGER",
    "FLORENCE_TASKS",
    "KNOWN_MODELS",
    "CaptionOptions",
    "Captioner",
    "FolderResult",
    "KnownModel",
    "Label",
    "ModelFilesMissing",
    "Tag",
    "TagChooser",
    "TagOptions",
    "WD14Tagger",
    "area_resize",
    "caption_folder",
    "choose_tags",
    "find_images",
    "format_model_list",
    "load_captioner",
    "load_tagger",
    "locate_captioner",
    "locate_tagger",
    "mcut_threshold",
    "merge_tags",
    "parse_tag_replacement",
    "split_list",
    "tag_folder",
    "tagger_pixels",
    "with_prefix_suffix",
]
