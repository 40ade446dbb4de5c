"""Patient-level train/val/test assignment: deterministic and independent of input order."""

from __future__ import annotations

import hashlib

import numpy as np

from plaque.errors import InputError


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Patients per split: largest-remainder rounding of ``n * fraction``, at least one per split
    with a positive fraction (taken from the largest split).

    Raises:
        InputError: fewer patients than splits with a positive fraction.
    """
    active = [name for name, f in fractions.items() if f > 0]
    if n < len(active):
        raise InputError("preprocess.split", f"{n} patient(s) with foreground cannot fill the "
                         f"{len(active)} non-empty splits {active}; need at least {len(active)}")
    exact = {name: n * fractions[name] for name in fractions}
    counts = {name: int(np.floor(x)) for name, x in exact.items()}
    by_remainder = sorted(fractions, key=lambda name: (-(exact[name] - counts[name]), list(fractions).index(name)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    for name in active:
        if counts[name] == 0:
            donor = max(active, key=lambda a: counts[a])
            counts[donor] -= 1
            counts[name] += 1
    return counts


def split_patients(ids: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each patient id to a split.

    Patients are ordered by SHA-256 of ``"{seed}:{id}"`` and cut into consecutive groups of
    `split_counts` sizes, in the order of ``fractions``; the result depends only on the set of ids.

    Args:
        ids: distinct patient ids (pseudonyms).
        fractions: split name -> fraction, summing to 1.
        seed: shuffling seed.

    Returns:
        id -> split name.

    Raises:
        InputError: duplicate ids, or too few patients (see `split_counts`).
    """
    if len(set(ids)) != len(ids):
        raise InputError("patients", "duplicate patient ids cannot be split")
    order = sorted(ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode("utf-8")).hexdigest())
    out: dict[str, str] = {}
    start = 0
    for name, count in split_counts(len(ids), fractions).items():
        out.update({pid: name for pid in order[start:start + count]})
        start += count
    return out
