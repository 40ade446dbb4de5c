"""Patient-level splits: deterministic, order-independent, fractions respected, never empty."""

from __future__ import annotations

import random

import pytest

from plaque.data.splits import split_counts, split_patients
from plaque.errors import InputError

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
IDS = [f"P{n:010x}" for n in range(0, 2000, 97)]  # 21 ids


def test_deterministic_and_independent_of_input_order() -> None:
    first = split_patients(IDS, FRACTIONS, seed=0)
    shuffled = IDS[:]
    random.Random(1).shuffle(shuffled)
    assert split_patients(shuffled, FRACTIONS, seed=0) == first
    assert split_patients(list(reversed(IDS)), FRACTIONS, seed=0) == first
    assert set(first) == set(IDS) and set(first.values()) == set(FRACTIONS)
    assert split_patients(IDS, FRACTIONS, seed=1) != first  # the seed matters


@pytest.mark.parametrize(
    "n, expected",
    [(21, (13, 4, 4)), (20, (12, 4, 4)), (10, (6, 2, 2)), (3, (1, 1, 1)), (4, (2, 1, 1)), (16, (10, 3, 3))],
)
def test_fractions_are_respected_and_no_split_is_empty(n: int, expected: tuple[int, int, int]) -> None:
    assignment = split_patients(IDS[:n] if n <= len(IDS) else [f"id{i}" for i in range(n)], FRACTIONS, seed=3)
    sizes = tuple(sum(1 for s in assignment.values() if s == name) for name in FRACTIONS)
    assert sizes == expected


def test_each_patient_in_exactly_one_split() -> None:
    assignment = split_patients(IDS, FRACTIONS, seed=0)
    groups = {name: {p for p, s in assignment.items() if s == name} for name in FRACTIONS}
    assert sum(len(g) for g in groups.values()) == len(IDS)
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])


def test_zero_fraction_split_stays_empty() -> None:
    counts = split_counts(2, {"train": 0.8, "val": 0.2, "test": 0.0})
    assert counts == {"train": 1, "val": 1, "test": 0}


def test_too_few_patients_is_an_error_naming_the_problem() -> None:
    with pytest.raises(InputError, match=r"need at least 3") as info:
        split_patients(IDS[:2], FRACTIONS, seed=0)
    assert info.value.where == "preprocess.split"


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(InputError, match="duplicate"):
        split_patients([IDS[0], IDS[0], IDS[1], IDS[2]], FRACTIONS, seed=0)


def test_rare_strata_reach_every_split() -> None:
    ids = [f"id{i:02d}" for i in range(30)]
    strata = {pid: ("ncp" if i < 5 else "calc" if i < 14 else "none") for i, pid in enumerate(ids)}
    for seed in range(10):
        assignment = split_patients(ids, FRACTIONS, seed=seed, strata=strata)
        sizes = [sum(1 for s in assignment.values() if s == name) for name in FRACTIONS]
        assert sizes == [18, 6, 6]  # stratification keeps the overall sizes
        for kind in ("ncp", "calc", "none"):
            assert {assignment[p] for p in ids if strata[p] == kind} == set(FRACTIONS), (seed, kind)


def test_stratified_split_is_independent_of_input_order() -> None:
    strata = {pid: str(i % 3) for i, pid in enumerate(IDS)}
    first = split_patients(IDS, FRACTIONS, seed=0, strata=strata)
    assert split_patients(list(reversed(IDS)), FRACTIONS, seed=0, strata=strata) == first
