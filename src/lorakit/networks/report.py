"""What `lorakit inspect` says about a LoRA/LyCORIS file: algorithm, ranks and alphas (per part,
per block where they vary), module counts, base family, training parameters, tags and triggers."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..utils.files import a1111_hashes
from .reading import ALGO_LABELS, ModuleWeights, load_network

PARTS = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
}

# ss_* key -> label, in the order shown
TRAINING_KEYS = [
    ("ss_network_module", "network module"),
    ("ss_network_dim", "network dim"),
    ("ss_network_alpha", "network alpha"),
    ("ss_network_args", "network args"),
    ("ss_network_dropout", "network dropout"),
    ("ss_sd_model_name", "base model"),
    ("ss_learning_rate", "learning rate"),
    ("ss_unet_lr", "U-Net lr"),
    ("ss_text_encoder_lr", "text encoder lr"),
    ("ss_optimizer", "optimizer"),
    ("ss_lr_scheduler", "lr scheduler"),
    ("ss_lr_warmup_steps", "warmup steps"),
    ("ss_steps", "steps"),
    ("ss_epoch", "epoch"),
    ("ss_num_epochs", "epochs"),
    ("ss_max_train_steps", "max steps"),
    ("ss_num_train_images", "train images"),
    ("ss_num_reg_images", "reg images"),
    ("ss_batch_size_per_device", "batch size"),
    ("ss_total_batch_size", "total batch size"),
    ("ss_gradient_accumulation_steps", "gradient accumulation"),
    ("ss_resolution", "resolution"),
    ("ss_mixed_precision", "mixed precision"),
    ("ss_clip_skip", "clip skip"),
    ("ss_seed", "seed"),
    ("ss_noise_offset", "noise offset"),
    ("ss_min_snr_gamma", "min SNR gamma"),
    ("ss_loss_type", "loss"),
    ("ss_caption_dropout_rate", "caption dropout"),
    ("ss_training_started_at", "started"),
    ("ss_training_finished_at", "finished"),
    ("ss_training_comment", "comment"),
]

_SGM = re.compile(r"(input_blocks|middle_block|output_blocks)[._](\d+)")
_DIFFUSERS = re.compile(r"(down|up)_blocks[._](\d+)[._](attentions|resnets|downsamplers|upsamplers)[._](\d+)")


def split_name(name: str) -> tuple[str, str]:
    """(part, path-ish rest) of a module name in kohya (`lora_unet_...`) or `part:path` form."""
    if ":" in name:
        part, _, rest = name.partition(":")
        return part, rest
    for prefix, part in PARTS.items():
        if name.startswith(prefix):
            return part, name[len(prefix) :]
    return "other", name


def block_label(part: str, rest: str) -> str:
    """IN04 / M00 / OUT05 (the A1111 block ids), for full-size layouts (2 layers per block)."""
    if part != "unet":
        return ""
    if m := _SGM.match(rest):
        if m[1] == "middle_block":
            return "M00"
        return ("IN" if m[1] == "input_blocks" else "OUT") + f"{int(m[2]):02d}"
    if rest.startswith(("mid_block", "mid.block")):
        return "M00"
    if m := _DIFFUSERS.match(rest):
        i, j = int(m[2]), int(m[4])
        if m[1] == "down":
            return f"IN{3 * i + (3 if m[3] == 'downsamplers' else j + 1):02d}"
        return f"OUT{3 * i + (2 if m[3] == 'upsamplers' else j):02d}"
    return "other"


def _rank_text(module: ModuleWeights) -> str:
    rank = module.rank
    return "full" if rank is None else str(rank)


def _alpha_text(module: ModuleWeights) -> str:
    if module.alpha is None:
        return "none (scale 1)"
    return f"{module.alpha:g}"


def _summary(values: list[str]) -> str | list[str]:
    unique = sorted(set(values), key=lambda v: (len(v), v))
    return unique[0] if len(unique) == 1 else unique


def _algorithm(network) -> str:
    meta = network.metadata
    module = meta.get("ss_network_module", "")
    algos = network.algorithms
    labels = []
    for algo in algos:
        label = ALGO_LABELS[algo]
        if algo == "lora" and any(m.is_conv_kxk for m in network.modules.values() if m.algo == "lora"):
            label = "LoCon"
        labels.append(label)
    name = " + ".join(labels)
    args = _json(meta.get("ss_network_args")) or {}
    if module == "networks.dylora" or str(args.get("algo", "")).lower() == "dylora":
        name = "DyLoRA"
    if any(m.dora_scale is not None for m in network.modules.values()):
        name += " + DoRA"
    return name


def _readable(key: str, value: str) -> str:
    """sd-scripts stores times as Unix timestamps; show them as dates."""
    if key.endswith("_at"):
        try:
            import time

            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
        except ValueError:
            return value
    return value


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _tags(meta: dict[str, str], top: int = 15) -> list[tuple[str, int]]:
    freq = _json(meta.get("ss_tag_frequency"))
    counts: Counter[str] = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    counts[tag.strip()] += int(n)
    return counts.most_common(top)


def _triggers(meta: dict[str, str]) -> list[str]:
    """modelspec.trigger_phrase, then the class tokens of the datasets (`10_sks dog` folders or
    `class_tokens` in ss_datasets): the words the model was taught to respond to."""
    found: list[str] = []
    phrase = meta.get("modelspec.trigger_phrase")
    if phrase:
        found.extend(p.strip() for p in phrase.split(",") if p.strip())
    dirs = _json(meta.get("ss_dataset_dirs"))
    if isinstance(dirs, dict):
        for folder in dirs:
            m = re.match(r"^\d+_(.+)$", Path(folder).name)
            if m:
                found.append(m[1].strip())
    datasets = _json(meta.get("ss_datasets"))
    if isinstance(datasets, list):
        for dataset in datasets:
            for subset in (dataset or {}).get("subsets", []) or []:
                tokens = (subset or {}).get("class_tokens")
                if tokens and not subset.get("is_reg"):
                    found.append(str(tokens).strip())
    return list(dict.fromkeys(found))


def network_report(path: Path) -> dict[str, Any]:
    path = Path(path)
    network = load_network(path)
    meta = network.metadata
    parts: dict[str, dict[str, list[str]]] = {}
    blocks: dict[str, dict[str, dict[str, set[str]]]] = {}
    for name, module in sorted(network.modules.items(), key=lambda item: split_name(item[0])[0] != "unet"):
        part, rest = split_name(name)
        entry = parts.setdefault(part, {"ranks": [], "alphas": [], "conv_ranks": []})
        rank, alpha = _rank_text(module), _alpha_text(module)
        kind = "conv" if module.is_conv_kxk else "linear"
        entry["conv_ranks" if kind == "conv" else "ranks"].append(rank)
        entry["alphas"].append(alpha)
        label = block_label(part, rest)
        if label:
            cell = blocks.setdefault(part, {}).setdefault(label, {"linear": set(), "conv": set()})
            cell[kind].add(f"{rank}/{alpha}")
    summary = {}
    for part, entry in parts.items():
        summary[part] = {
            "modules": len(entry["alphas"]),
            "rank": _summary(entry["ranks"]) if entry["ranks"] else None,
            "conv_rank": _summary(entry["conv_ranks"]) if entry["conv_ranks"] else None,
            "alpha": _summary(entry["alphas"]),
        }
    per_block = {}
    for part, labels in blocks.items():
        varies = any(
            len({frozenset(cell[kind]) for cell in labels.values() if cell[kind]}) > 1
            for kind in ("linear", "conv")
        )
        if varies:  # rank/alpha of the Linear/1x1 layers, then of the kxk convs
            per_block[part] = {
                label: "; ".join(
                    ("conv " if kind == "conv" else "") + ", ".join(sorted(cell[kind]))
                    for kind in ("linear", "conv")
                    if cell[kind]
                )
                for label, cell in sorted(labels.items(), key=_block_order)
            }
    dtypes = Counter(
        str(t.dtype).removeprefix("torch.") for m in network.modules.values() for t in m.tensors.values()
    )
    training = {
        label: _readable(key, meta[key])
        for key, label in TRAINING_KEYS
        if meta.get(key) not in (None, "", "None")
    }
    return {
        "kind": "network",
        "file": str(path),
        "format": network.format,
        "algorithm": _algorithm(network),
        "family": network.family.label if network.family else "unknown",
        "base_model_version": meta.get("ss_base_model_version", ""),
        "title": meta.get("modelspec.title", ""),
        "merged_from": meta.get("modelspec.merged_from", ""),
        "modules": {part: s["modules"] for part, s in summary.items()},
        "parts": summary,
        "blocks": per_block,
        "precision": ", ".join(d for d, _ in dtypes.most_common()),
        "training": training,
        "top_tags": _tags(meta),
        "trigger_words": _triggers(meta),
        "sshs_model_hash": meta.get("sshs_model_hash", ""),
        **a1111_hashes(path),
    }


def _block_order(item: tuple[str, Any]) -> tuple[int, int]:
    label = item[0]
    order = {"IN": 0, "M0": 1, "OU": 2}.get(label[:2], 3)
    digits = re.sub(r"\D", "", label)
    return order, int(digits) if digits else 0


def format_network_report(report: dict[str, Any]) -> str:
    lines = [
        f"file:        {report['file']}",
        f"kind:        {report['algorithm']} network ({report['format']} format)",
        f"base model:  {report['family']}"
        + (f" ({report['base_model_version']})" if report["base_model_version"] else ""),
    ]
    if report.get("title"):
        lines.append(f"title:       {report['title']}")
    if report.get("merged_from"):
        lines.append(f"merged from: {report['merged_from']} (modelspec.merged_from)")
    lines.append(f"precision:   {report['precision']}")
    lines.append("modules:")
    for part, s in report["parts"].items():
        rank = s["rank"] if isinstance(s["rank"], str) or s["rank"] is None else ", ".join(s["rank"])
        text = f"  {part:<15} {s['modules']:>4} modules"
        if rank is not None:
            text += f", rank {rank}"
        if s["conv_rank"] is not None:
            conv = s["conv_rank"] if isinstance(s["conv_rank"], str) else ", ".join(s["conv_rank"])
            text += f", conv rank {conv}"
        alpha = s["alpha"] if isinstance(s["alpha"], str) else ", ".join(s["alpha"])
        lines.append(text + f", alpha {alpha}")
    for part, per_block in report["blocks"].items():
        lines.append(f"rank/alpha per block ({part}):")
        lines.extend(f"  {label:<6} {value}" for label, value in per_block.items())
    if report["training"]:
        lines.append("training:")
        lines.extend(f"  {label:<22} {value}" for label, value in report["training"].items())
    if report["trigger_words"]:
        lines.append("trigger words: " + ", ".join(report["trigger_words"]))
    if report["top_tags"]:
        lines.append("top tags:      " + ", ".join(f"{tag} ({n})" for tag, n in report["top_tags"]))
    lines.append(
        f"sha256:      {report['sha256']}  (short {report['short_hash']}, legacy {report['legacy_hash']})"
    )
    if report.get("sshs_model_hash"):
        lines.append(f"sshs hash:   {report['sshs_model_hash']}")
    return "\n".join(lines)
