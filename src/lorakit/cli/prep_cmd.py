"""`lorakit prep resize SRC DST`: shrink and crop images for training, captions kept beside them."""

from __future__ import annotations

import argparse

from .common import add_actions, add_command

SHOW_FILES = 20


def register(sub) -> None:
    p = add_command(
        sub,
        "prep",
        help="Prepare images for training (resize and crop into a new folder).",
        description="Prepare training images. The source folder is never changed.",
    )
    psub = add_actions(p, "prep_command")
    r = add_command(
        psub,
        "resize",
        help="Shrink images to a maximum size and crop them to multiples of 64, into a new folder.",
        description="Copy a folder of images into a new folder, shrinking every image whose area is larger "
        "than --max (the shape is kept) and cutting each side down to a multiple of --divisible "
        "(centre crop; --pad letterboxes instead). Small images are never enlarged. File names stay the same, "
        "subfolders (like 10_name) are kept, and caption files and other files are copied beside the images; "
        "a caption only with its image. Each crop that cuts away more than 20% of a side is listed.",
    )
    r.add_argument("src", metavar="SRC", help="Folder with the original images.")
    r.add_argument("dst", metavar="DST", help="New folder for the resized images (must be outside SRC).")
    r.add_argument(
        "--max",
        default="512x512",
        metavar="WxH",
        help="Largest size as width x height, e.g. 1024x1024. Only the area counts. Default: 512x512.",
    )
    r.add_argument(
        "--divisible",
        type=int,
        default=64,
        metavar="N",
        help="Width and height become multiples of this. Default: 64.",
    )
    r.add_argument(
        "--interpolation",
        choices=["area", "lanczos", "bicubic", "bilinear", "nearest"],
        help="How pixels are combined when shrinking. Default: area (sharp and clean).",
    )
    r.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        help="Save every image in this format. Default: keep each format.",
    )
    r.add_argument(
        "--background",
        default="white",
        metavar="COLOUR",
        help="Colour put behind transparent parts when saving as JPEG. Default: white.",
    )
    r.add_argument(
        "--pad",
        metavar="COLOUR",
        help="Instead of cropping to multiples of --divisible, pad each side up to the next multiple with "
        "this colour (white, black, gray, #rrggbb): nothing is cut away.",
    )
    r.add_argument("--overwrite", action="store_true", help="Replace files that already exist in DST.")
    r.set_defaults(run=run_resize)
    p.set_defaults(run=lambda args: (p.print_help(), 1)[1])


def run_resize(args: argparse.Namespace) -> int:
    from ..data.prep import parse_size, resize_folder
    from ..data.schema import KEYS
    from ..errors import DatasetError

    colours = {}
    for name in ("background", "pad"):
        value = getattr(args, name)
        try:
            colours[name] = KEYS["alpha_background"].parse(value) if value is not None else None
        except ValueError as e:
            raise DatasetError(f"--{name} {e}") from None
    result = resize_folder(
        args.src,
        args.dst,
        max_size=parse_size(args.max),
        divisible=args.divisible,
        interpolation=args.interpolation,
        fmt=args.format,
        background=colours["background"],
        overwrite=args.overwrite,
        pad=colours["pad"],
    )
    shrunk = sum(1 for _, _, old, new in result.resized if old != new)
    print(
        f"{len(result.resized)} images written to {args.dst} ({shrunk} changed in size), {len(result.copied)} other files copied."
    )
    changed = [(path, old, new) for path, _, old, new in result.resized if old != new]
    for path, old, new in changed[:SHOW_FILES]:
        print(f"  {path}: {old[0]}x{old[1]} -> {new[0]}x{new[1]}")
    if len(changed) > SHOW_FILES:
        print(f"  ... and {len(changed) - SHOW_FILES} more")
    for path, what in result.cropped:
        print(f"  cropped {path}: {what}")
    if result.cropped:
        print("  (--pad COLOUR keeps the whole picture: the sides are padded to a multiple of --divisible)")
    for path, why in result.skipped:
        print(f"  skipped {path}: {why}")
    for path, why in result.failed:
        print(f"  FAILED {path}: {why}")
    return 1 if result.failed else 0
