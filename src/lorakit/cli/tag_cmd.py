"""`lorakit tag DIR`: a tag file for every image, from a WD14-family tagger (sd-scripts' options)."""

from __future__ import annotations

import argparse
import sys

from .common import add_command

SHOW_FILES = 20
TOP_TAGS = 10


def add_folder_options(p: argparse.ArgumentParser, extension: str) -> None:
    """Options `tag` and `caption` share: where the images are, how files are written, the model."""
    p.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        help="Folder with the images; caption files are written beside them.",
    )
    p.add_argument(
        "--caption_extension",
        default=extension,
        metavar="EXT",
        help=f"Extension of the files written. Default: {extension}.",
    )
    p.add_argument(
        "--recursive",
        action="store_true",
        help="Also every subfolder (like the 10_name folders of a training folder).",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=1,
        metavar="N",
        help="Images given to the model at once. Default: 1.",
    )
    p.add_argument(
        "--model_dir",
        metavar="DIR",
        help="Folder where lorakit looks for models you downloaded by hand, one subfolder per repository "
        "named owner_name (sd-scripts' wd14_tagger_model layout, so sd-scripts' downloads are used as they "
        "are). Default: ~/.cache/lorakit/models. Automatic downloads go to the Hugging Face cache.",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="Where the model runs. Default: auto (the GPU when there is one and the software for it).",
    )
    p.add_argument("--dry-run", action="store_true", help="Only show what would be written; change no file.")


def register(sub) -> None:
    p = add_command(
        sub,
        "tag",
        help="Write a tag file for every image with a WD14 tagger (like sd-scripts' tag_images_by_wd14_tagger.py).",
        description="Tag every image of DIR with a WD14-family tagger and write NAME.txt beside it, with the "
        "option names and defaults of sd-scripts' tag_images_by_wd14_tagger.py. Files that are overwritten "
        "are first copied to DIR/.lorakit-backup/ ('lorakit tags restore DIR' undoes the run). Offline, the "
        "model must be on disk: see --list-models and --model.",
    )
    add_folder_options(p, ".txt")
    p.add_argument(
        "--model",
        "--repo_id",
        dest="model",
        metavar="NAME",
        help="The tagger: a folder with model.onnx and selected_tags.csv (or tag_mapping.json), a name from "
        "--list-models, or a Hugging Face repo id. Default: wd-v1-4-convnext-tagger-v2.",
    )
    p.add_argument(
        "--list-models", action="store_true", help="List the known taggers and captioners, then stop."
    )
    p.add_argument(
        "--onnx",
        action="store_true",
        help="Accepted as sd-scripts takes it; lorakit always runs the ONNX model.",
    )
    p.add_argument(
        "--thresh",
        type=float,
        default=0.35,
        metavar="P",
        help="Score a tag needs to be written. Default: 0.35.",
    )
    for category, extra in (
        ("general", ""),
        ("character", " Above 1 writes no character tags."),
        ("copyright", " Only tag_mapping.json models have these."),
        ("artist", " Only tag_mapping.json models have these."),
        ("meta", " Only tag_mapping.json models have these."),
        ("model", " Only tag_mapping.json models have these."),
    ):
        p.add_argument(
            f"--{category}_threshold",
            type=float,
            metavar="P",
            help=f"Score a tag of the {category} category needs. Default: --thresh.{extra}",
        )
    p.add_argument(
        "--mcut",
        action="store_true",
        help="Choose the threshold per image and category where the scores drop most (MCut); characters "
        "need at least 0.15. Replaces the thresholds above.",
    )
    p.add_argument(
        "--undesired_tags",
        default="",
        metavar="TAGS",
        help="Tags never written, separated by commas, e.g. 'watermark,signature'.",
    )
    p.add_argument(
        "--always_first_tags",
        metavar="TAGS",
        help="Tags put first, in this order, separated by commas. A trigger word the model does not know is "
        "added to every file; a tag it knows (1girl) goes first where it was found.",
    )
    p.add_argument(
        "--character_tags_first", action="store_true", help="Put character tags before the others."
    )
    p.add_argument(
        "--use_rating_tags", action="store_true", help="Write the rating (general, sensitive...) first."
    )
    p.add_argument("--use_rating_tags_as_last_tag", action="store_true", help="Write the rating last.")
    p.add_argument(
        "--use_quality_tags",
        action="store_true",
        help="Write the quality tag first (tag_mapping.json models).",
    )
    p.add_argument("--use_quality_tags_as_last_tag", action="store_true", help="Write the quality tag last.")
    p.add_argument(
        "--remove_underscore",
        action="store_true",
        help="Write long_hair as 'long hair'. Tags of 3 characters or fewer and kaomoji (^_^) keep theirs.",
    )
    p.add_argument(
        "--character_tag_expand",
        action="store_true",
        help="Split 'name_(series)' into two tags: 'name' and 'series'.",
    )
    p.add_argument(
        "--tag_replacement",
        metavar="OLD,NEW;...",
        help="Write NEW instead of OLD, e.g. '1girl,1woman;1boy,1man'. Write a comma or semicolon inside a "
        "tag as \\, or \\;.",
    )
    p.add_argument(
        "--sort_by_score",
        action="store_true",
        help="Order tags by score, highest first. Default: the order of the model's tag list "
        "(tag_mapping.json models: by score, as sd-scripts).",
    )
    p.add_argument(
        "--caption_separator", default=", ", metavar="TEXT", help="Text between tags. Default: ', '."
    )
    p.add_argument(
        "--append_tags",
        action="store_true",
        help="Keep the tags already in the file and add the new ones after them, none twice.",
    )
    p.add_argument(
        "--frequency_tags",
        action="store_true",
        help="At the end, list every tag with how many images got it.",
    )
    p.add_argument(
        "--output_path",
        metavar="FILE",
        help="Write sd-scripts' metadata file for --in_json instead of tag files: JSON, or JSONL when "
        "FILE ends in .jsonl.",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for the model. Default: onnxruntime's (all cores).",
    )
    p.set_defaults(run=run_tag)


def run_on_folder(args: argparse.Namespace, describe_folder, *model_args, **options):
    """Call `tag_folder`/`caption_folder` with the options both share and a progress bar (tqdm,
    with ETA) fed by the library's progress callback."""
    from tqdm.auto import tqdm

    bars = []  # made at the first report, when the number of images is known

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    try:
        return describe_folder(
            args.folder,
            *model_args,
            caption_extension=args.caption_extension,
            recursive=args.recursive,
            batch_size=args.batch_size,
            dry_run=args.dry_run,
            progress=update,
            **options,
        )
    finally:
        for bar in bars:
            bar.close()


def print_result(result, args, verb: str, what: str) -> int:
    """The end of a run: what was (or would be) written, failures, backups, the undo command."""
    for e in result.edits[: SHOW_FILES if args.dry_run else 0]:
        print(f"{e.path}:")
        if e.before is not None:
            print(f"  before: {e.before.strip()}")
        print(f"  {'after: ' if e.before is not None else 'new:   '} {e.after.strip()}")
    if args.dry_run and len(result.edits) > SHOW_FILES:
        print(f"... and {len(result.edits) - SHOW_FILES} more files")
    for path, why in result.skipped:
        print(f"skipped {path}: {why}")
    for path, why in result.failed:
        print(f"FAILED {path}: {why}")
    written = "would be written" if args.dry_run else "written"
    target = (
        f"metadata {result.metadata_file}"
        if result.metadata_file
        else f"{len(result.edits)} {what} file(s) {written}"
    )
    print(
        f"{verb} {result.images} image(s): {target}, {result.unchanged} unchanged, {len(result.failed)} failed."
    )
    if result.backed_up and not args.dry_run:
        print(f"{result.backed_up} old file(s) saved in {result.backup}")
    if result.backup is not None and not args.dry_run:
        print(f"To undo: lorakit tags restore {args.folder} --backup {result.backup.name}")
    if args.dry_run:
        print("dry run: nothing was written.")
    return 1 if result.failed else 0


def _options(args):
    from ..data.tagging import TagOptions, parse_tag_replacement, split_list

    return TagOptions(
        thresh=args.thresh,
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        copyright_threshold=args.copyright_threshold,
        artist_threshold=args.artist_threshold,
        meta_threshold=args.meta_threshold,
        model_threshold=args.model_threshold,
        mcut=args.mcut,
        undesired_tags=split_list(args.undesired_tags, args.caption_separator),
        always_first_tags=split_list(args.always_first_tags, args.caption_separator),
        character_tags_first=args.character_tags_first,
        use_rating_tags=args.use_rating_tags,
        use_rating_tags_as_last_tag=args.use_rating_tags_as_last_tag,
        use_quality_tags=args.use_quality_tags,
        use_quality_tags_as_last_tag=args.use_quality_tags_as_last_tag,
        remove_underscore=args.remove_underscore,
        character_tag_expand=args.character_tag_expand,
        tag_replacement=parse_tag_replacement(args.tag_replacement),
        sort_by_score=True if args.sort_by_score else None,
    )


def run_tag(args: argparse.Namespace) -> int:
    from ..data.tagging import format_model_list, load_tagger, locate_tagger, tag_folder
    from ..errors import ConfigError

    if args.list_models:
        print(format_model_list())
        return 0
    if not args.folder:
        raise ConfigError("give the folder of images to tag: lorakit tag DIR (or --list-models).")
    options = _options(args)
    tagger = load_tagger(locate_tagger(args.model, args.model_dir), device=args.device, threads=args.threads)
    if tagger.input.batch_size and tagger.input.batch_size != args.batch_size:
        print(f"note: the model takes {tagger.input.batch_size} image(s) at a time; it is run that way.")
    result = run_on_folder(
        args,
        tag_folder,
        tagger,
        options,
        caption_separator=args.caption_separator,
        append_tags=args.append_tags,
        output_path=args.output_path,
    )
    code = print_result(result, args, "tagged", "tag")
    print(f"tags per image: {result.tags_per_image:.1f} ({tagger.model_file.parent.name}, {tagger.provider})")
    top = result.tag_counts.most_common(None if args.frequency_tags else TOP_TAGS)
    if top:
        title = "tag frequencies:" if args.frequency_tags else "most frequent tags:"
        print(
            title
            + ("\n  " if args.frequency_tags else " ")
            + ("\n  " if args.frequency_tags else ", ").join(f"{t} {n}" for t, n in top)
        )
    return code
