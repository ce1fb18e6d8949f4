"""`lorakit tags ...`: add, remove, replace and count the tags of a folder of caption files."""

from __future__ import annotations

import argparse

from .common import add_actions, add_command

SHOW_FILES = 20


def _folder_options(p: argparse.ArgumentParser, edits: bool = True) -> None:
    p.add_argument("folder", help="Folder with the caption files (beside the images).")
    p.add_argument(
        "--caption_extension",
        metavar="EXT",
        help="Extension of the caption files, like .txt. Default: .txt or .caption, whichever the folder has.",
    )
    p.add_argument(
        "--recursive", "-r", action="store_true", help="Also work in all subfolders (like 10_name)."
    )
    p.add_argument(
        "--separator", default=",", metavar="TEXT", help="Character between tags. Default: a comma."
    )
    if edits:
        p.add_argument("--dry-run", action="store_true", help="Only show what would change; write nothing.")


def _edit_action(tsub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """An action that changes the captions: the folder options, then run_edit does `name`."""
    p = add_command(tsub, name, help=help, description=description)
    _folder_options(p)
    p.set_defaults(run=run_edit, action=name)
    return p


def register(sub) -> None:
    p = add_command(
        sub,
        "tags",
        help="Edit tags in caption files: add a trigger word, remove, replace, dedup, count.",
        description="Edit the tags of every caption file in a folder. Before any change the old files are "
        "copied to FOLDER/.lorakit-backup/, so 'lorakit tags restore FOLDER' can undo it. "
        "Use --dry-run to see the changes first.",
    )
    tsub = add_actions(p, "tags_command")

    a = _edit_action(
        tsub,
        "add",
        help="Put tags (e.g. a trigger word) at the front of every caption, once.",
        description="Put the given tags at the front of every caption, in the given order. A tag that is "
        "already somewhere in the caption is moved, not repeated.",
    )
    a.add_argument("tags", nargs="+", help="Tags to add, e.g. 'sks dog'. Quote a tag that has spaces.")
    a.add_argument("--end", action="store_true", help="Put the tags at the end instead of the front.")
    a.add_argument(
        "--create-missing",
        action="store_true",
        help="Also create a caption file with these tags for images that have none.",
    )

    r = _edit_action(
        tsub,
        "remove",
        help="Remove tags from every caption.",
        description="Remove the given tags from every caption.",
    )
    r.add_argument("tags", nargs="+", help="Tags to remove, exactly as written in the captions.")

    rp = _edit_action(
        tsub,
        "replace",
        help="Replace one tag by another in every caption.",
        description="Replace OLD by NEW where OLD appears.",
    )
    rp.add_argument("old", help="The tag to replace.")
    rp.add_argument("new", help="The tag to put in its place.")

    _edit_action(
        tsub,
        "dedup",
        help="Remove repeated tags inside each caption.",
        description="Keep only the first copy of each tag.",
    )

    s = add_command(
        tsub,
        "stats",
        help="Show how many captions use each tag.",
        description="Count, for each tag, the caption files that have it.",
    )
    _folder_options(s, edits=False)
    s.add_argument(
        "--top", type=int, default=50, metavar="N", help="Show this many tags (0 = all). Default: 50."
    )
    s.set_defaults(run=run_stats)

    u = add_command(
        tsub,
        "restore",
        help="Undo a tags change: put a backup back.",
        description="Copy the files of a backup in FOLDER/.lorakit-backup/ back (the newest one unless --backup is given), "
        "and delete caption files that the change created.",
    )
    u.add_argument("folder", help="The folder the change was made in.")
    u.add_argument(
        "--backup", help="Name of the backup to restore, like tags-20250101-120000. Default: the newest."
    )
    u.add_argument("--list", action="store_true", help="Only list the backups.")
    u.set_defaults(run=run_restore)
    p.set_defaults(run=lambda args: (p.print_help(), 1)[1])


def run_edit(args: argparse.Namespace) -> int:
    from ..data import tags as T

    if args.action == "add":
        op = T.op_add(args.tags, at_end=args.end)
    elif args.action == "remove":
        op = T.op_remove(args.tags)
    elif args.action == "replace":
        op = T.op_replace(args.old, args.new)
    else:
        op = T.op_dedup()
    create = args.tags if args.action == "add" and args.create_missing else None
    edits, unreadable = T.plan_edits(
        args.folder, op, args.caption_extension, args.recursive, args.separator, create
    )
    for e in edits[:SHOW_FILES]:
        print(f"{e.path}:")
        print(f"  before: {e.before.strip() if e.before is not None else '(no file)'}")
        print(f"  after:  {e.after.strip()}")
    if len(edits) > SHOW_FILES:
        print(f"... and {len(edits) - SHOW_FILES} more files")
    for path, why in unreadable:
        print(f"NOT CHANGED {path}: {why}")
    if args.dry_run:
        print(f"dry run: {len(edits)} file(s) would change; nothing was written.")
        return 1 if unreadable else 0
    backup = T.apply_edits(args.folder, edits)
    if backup is None:
        print("nothing to change.")
    else:
        print(f"{len(edits)} file(s) changed. Old versions saved in {backup}")
        print(f"To undo: lorakit tags restore {args.folder} --backup {backup.name}")
    return 1 if unreadable else 0


def run_stats(args: argparse.Namespace) -> int:
    from ..data.tags import tag_stats

    counts, files, unreadable = tag_stats(args.folder, args.caption_extension, args.recursive, args.separator)
    print(f"{files} caption files, {len(counts)} different tags")
    items = counts.most_common(args.top or None)
    width = max((len(t) for t, _ in items), default=0)
    for tag, n in items:
        print(f"  {tag:<{width}}  {n:>5}  {100 * n / max(files, 1):5.1f}%")
    if args.top and len(counts) > args.top:
        print(f"  ... {len(counts) - args.top} more (use --top 0 to see all)")
    for path, why in unreadable:
        print(f"NOT READ {path}: {why}")
    return 1 if unreadable else 0


def run_restore(args: argparse.Namespace) -> int:
    from ..data.tags import list_backups, restore_backup

    if args.list:
        backups = list_backups(args.folder)
        for b in backups:
            print(b.name)
        if not backups:
            print("no backups")
        return 0
    backup, restored, removed = restore_backup(args.folder, args.backup)
    print(f"restored {len(restored)} file(s) from {backup}; removed {len(removed)} created file(s).")
    return 0
