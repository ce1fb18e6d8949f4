"""Per-block vectors: sd-scripts' block dims / learning-rate weights for training, and A1111's
LoRA Block Weight (LBW) vectors for applying a file.

The two use different block numberings, both of which users type by hand:
- sd-scripts (`block_dims`, `down/mid/up_lr_weight`): SD1/2 has 25 blocks (12 down, mid, 12 up);
  SDXL 23 (time/label embedding, 9 down, 3 mid, 9 up, out).
- LBW: BASE (the text encoders) then IN/M/OUT ids; 17 values for an SD1 LoRA (the blocks that
  have attention layers), 26 for SD1 LyCORIS/LoCon, 12 and 20 for SDXL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..models.families import Family
from .errors import NetworkError

SD_BLOCKS = 25
SDXL_BLOCKS = 23


def num_blocks(family: Family) -> int:
    return SDXL_BLOCKS if family.is_xl else SD_BLOCKS


def parse_numbers(value, what: str, cast=float) -> list:
    if isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v != ""]
    else:
        items = list(value)
    try:
        return [cast(v) for v in items]
    except ValueError as e:
        raise NetworkError(f"{what}: {value!r} is not a comma-separated list of numbers.") from e


def block_vector(value, family: Family, what: str, cast=float) -> list | None:
    """`block_dims` & co.: exactly 25 (SD1/2) or 23 (SDXL) values."""
    if value is None:
        return None
    values = parse_numbers(value, what, cast)
    n = num_blocks(family)
    if len(values) != n:
        layout = (
            "time/label embedding, 9 input blocks, 3 middle, 9 output blocks, out"
            if family.is_xl
            else "12 input blocks, the middle block, 12 output blocks"
        )
        raise NetworkError(
            f"{what} has {len(values)} values; {family.label} needs {n} ({layout}). Example: "
            f"{what}={','.join(['4'] * n)}"
        )
    return values


_LR_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")


def _lr_preset(spec: str, n: int, what: str) -> list[float]:
    name, _, base = spec.partition("+")
    try:
        base_lr = float(base) if base else 0.0
    except ValueError as e:
        raise NetworkError(f"{what}={spec!r}: the part after '+' must be a number.") from e
    steps = [i / (n - 1) for i in range(n)]
    if name == "cosine":
        return [math.sin(math.pi * s / 2) + base_lr for s in reversed(steps)]
    if name == "sine":
        return [math.sin(math.pi * s / 2) + base_lr for s in steps]
    if name == "linear":
        return [s + base_lr for s in steps]
    if name == "reverse_linear":
        return [s + base_lr for s in reversed(steps)]
    if name == "zeros":
        return [base_lr] * n
    raise NetworkError(
        f"{what}={spec!r} is neither a list of numbers nor a preset ({', '.join(_LR_PRESETS)}, "
        "optionally with '+base', e.g. cosine+0.1)."
    )


def block_lr_weights(
    family: Family, down=None, mid=None, up=None, zero_threshold: float = 0.0
) -> list[float] | None:
    """sd-scripts' per-block learning-rate factors (25 or 23 values), or None if none given.

    down/up: a list (short lists are padded with 1) or a preset; mid: a list. Values at or below
    `zero_threshold` become 0, and blocks at 0 are not trained at all.
    """
    if down is None and mid is None and up is None:
        return None
    side = 9 if family.is_xl else 12
    mids = 3 if family.is_xl else 1

    def side_vector(value, what: str, length: int) -> list[float]:
        if value is None:
            return [1.0] * length
        if isinstance(value, str) and not any(c.isdigit() for c in value.split("+")[0]):
            values = _lr_preset(value, length, what)
        else:
            values = parse_numbers(value, what)
        if len(values) > length:
            raise NetworkError(f"{what} has {len(values)} values; {family.label} has {length} such blocks.")
        values = values + [1.0] * (length - len(values))
        return [v if v > zero_threshold else 0.0 for v in values]

    weights = (
        side_vector(down, "down_lr_weight", side)
        + side_vector(mid, "mid_lr_weight", mids)
        + side_vector(up, "up_lr_weight", side)
    )
    return [1.0, *weights, 1.0] if family.is_xl else weights


# ---- A1111 LoRA Block Weight ------------------------------------------------------------------

LBW_IDS: dict[int, list[str]] = {
    17: ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"]
    + [f"OUT{i:02d}" for i in range(3, 12)],
    26: ["BASE"] + [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)],
    12: ["BASE", "IN04", "IN05", "IN07", "IN08", "M00"] + [f"OUT{i:02d}" for i in range(6)],
    20: ["BASE"] + [f"IN{i:02d}" for i in range(9)] + ["M00"] + [f"OUT{i:02d}" for i in range(9)],
}

# The extension's built-in presets, written for the 17-value SD1 layout.
LBW_PRESETS: dict[str, list[float]] = {
    "NONE": [0.0] * 17,
    "ALL": [1.0] * 17,
    "INS": [1, 1, 1, 1] + [0] * 13,
    "IND": [1, 0, 0, 0, 1, 1, 1] + [0] * 10,
    "INALL": [1, 1, 1, 1, 1, 1, 1] + [0] * 10,
    "MIDD": [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTD": [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTS": [1] + [0] * 11 + [1, 1, 1, 1, 1],
    "OUTALL": [1] + [0] * 7 + [1] * 9,
    "ALL0.5": [0.5] * 17,
}


def lbw_weights(spec: str | Sequence[float], family: Family) -> dict[str, float]:
    """Block id -> weight from an LBW vector or preset name. Blocks the vector does not list get
    0, as the extension's own conversion to 26 values does (a 17-value vector on a LoCon leaves
    IN00/IN03/... out)."""
    if isinstance(spec, str) and spec.strip().upper() in LBW_PRESETS:
        values = LBW_PRESETS[spec.strip().upper()]
        if family.is_xl and len(set(values)) > 1:
            raise NetworkError(
                f"LBW preset {spec} is defined for SD1's 17 blocks; for {family.label} give 12 or 20 "
                "values (BASE, IN04, IN05, IN07, IN08, M00, OUT00-OUT05 / BASE, IN00-IN08, M00, OUT00-OUT08)."
            )
        if family.is_xl:
            values = [values[0]] * 20
    else:
        values = parse_numbers(spec, "block weights")
    allowed = (12, 20) if family.is_xl else (17, 26)
    if len(values) not in allowed:
        raise NetworkError(
            f"block weights have {len(values)} values; {family.label} takes {' or '.join(map(str, allowed))} "
            f"(the LoRA or the LyCORIS layout), or a preset "
            f"({', '.join(LBW_PRESETS)})."
        )
    weights = dict.fromkeys(LBW_IDS[26 if not family.is_xl else 20], 0.0)
    weights.update(zip(LBW_IDS[len(values)], values))
    return weights
