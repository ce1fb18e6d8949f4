"""Full-size checks, run with `python -m pytest -m slow` (minutes, ~6 GB of RAM, 4 GB of disk)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_full_size_sd15_round_trip_is_bit_exact(tmp_path):
    from checkpoint_roundtrip import run

    result = run("sd1", tmp_path)
    assert result["tensors"] > 1000
    assert result["mismatched"] == []
