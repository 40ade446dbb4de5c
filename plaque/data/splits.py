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
        raise InputError(
            "preprocess.split",
            f"{n} patient(s) with foreground cannot fill the "
            f"{len(active)} non-empty splits {active}; need at least {len(active)}",
        )
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


def _interleave(counts: dict[str, int]) -> list[str]:
    """A sequence of ``sum(counts)`` split names in which every prefix holds each split in proportion
    to its count (Bresenham-style dealing), e.g. ``{train: 3, val: 1, test: 1}`` -> train, val, train, test, train."""
    n = sum(counts.values())
    dealt = dict.fromkeys(counts, 0)
    sequence = []
    for p in range(1, n + 1):
        name = max(counts, key=lambda s: (counts[s] * p / n - dealt[s], counts[s]))
        dealt[name] += 1
        sequence.append(name)
    return sequence


def split_patients(
    ids: list[str], fractions: dict[str, float], seed: int, strata: dict[str, str] | None = None
) -> dict[str, str]:
    """Assign each patient id to a split, stratified so that rare kinds of patient reach every split.

    Split sizes come from `split_counts`. Patients are ordered by stratum (rarest first), then by
    SHA-256 of ``"{seed}:{id}"``, and dealt along `_interleave`, so each stratum is spread over the
    splits in proportion to their fractions. The result depends only on the ids and strata.

    Args:
        ids: distinct patient ids (pseudonyms).
        fractions: split name -> fraction, summing to 1.
        seed: shuffling seed.
        strata: id -> stratum (e.g. which plaque types the patient has); ``None``: one stratum.

    Returns:
        id -> split name.

    Raises:
        InputError: duplicate ids, or too few patients (see `split_counts`).
    """
    if len(set(ids)) != len(ids):
        raise InputError("patients", "duplicate patient ids cannot be split")
    stratum = strata or dict.fromkeys(ids, "")
    size = {k: sum(1 for pid in ids if stratum[pid] == k) for k in set(stratum[pid] for pid in ids)}
    order = sorted(
        ids,
        key=lambda pid: (size[stratum[pid]], stratum[pid], hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()),
    )
    return dict(zip(order, _interleave(split_counts(len(ids), fractions))))
