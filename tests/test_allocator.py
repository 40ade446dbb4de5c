"""glibc's malloc kept from returning freed memory (`plaque.allocator`), each case in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from plaque.allocator import _SETTINGS, _glibc
from plaque.paths import repo_root

pytestmark = pytest.mark.skipif(not _glibc(), reason="the settings are glibc's")

# Three 8 MiB arrays made and freed 30 times after a warm-up; prints keep_heap's answer, the page faults of
# the 30 rounds and the MALLOC_ variables the process would hand to its children.
_ROUNDS = """
import os, resource, sys
import numpy as np
from plaque.allocator import keep_heap
kept = keep_heap() if sys.argv[1] == "keep" else None
def rounds(n):
    for _ in range(n):
        arrays = [np.ones(1 << 20) for _ in range(3)]
        del arrays
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(30)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, faults, sorted((k, v) for k, v in os.environ.items() if k.startswith("MALLOC_")))
"""


def _run(mode: str, **env: str) -> tuple[str, int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode],
        cwd=repo_root(),
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=2)
    return out[0], int(out[1]), out[2].strip()


def test_keep_heap_stops_freed_memory_being_faulted_in_again_and_passes_it_on() -> None:
    _, plain_faults, plain_env = _run("plain")
    kept, kept_faults, kept_env = _run("keep")
    assert plain_faults > 30 * 500  # the defaults hand the 24 MiB back and fault it in again every round
    assert kept == "True"
    assert kept_faults < plain_faults / 20
    assert plain_env == "[]"
    assert kept_env == str(sorted((name, str(value)) for name, (_, value) in _SETTINGS.items()))


def test_keep_heap_leaves_a_setting_made_before_it_alone() -> None:
    kept, _, env = _run("keep", MALLOC_TRIM_THRESHOLD_="4096")
    assert kept == "False"
    assert env == "[('MALLOC_TRIM_THRESHOLD_', '4096')]"
