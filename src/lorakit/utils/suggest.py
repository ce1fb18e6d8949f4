""" "Did you mean …?" for names users type: options, dataset keys, optimizers, flags."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to `name`, if one is near enough to be what was meant."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """ " Did you mean 'x'?" or "" (to append to a message)."""
    match = closest(name, candidates)
    return f" Did you mean '{match}'?" if match else ""
