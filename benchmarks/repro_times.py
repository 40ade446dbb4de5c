"""End-to-end `dvc repro` time of the pipeline, stage by stage, in a fresh clone of the repository.

    python -m benchmarks.repro_times [--profile demo|paper|paper_smoke|smoke] [--stages phantom,preprocess,...]
                                     [--json results/bench/repro_times.json] [--keep DIR] [--dry-run]

Clones the repository's committed ``HEAD`` (uncommitted changes are not part of the run) into a
temporary folder (or ``--keep DIR``), then runs ``dvc repro -s <stage>`` there for each stage in
pipeline order (`stage_order`) and times it. The clone runs with the running Python as the stages'
``python``, its folder (a virtual environment's ``bin``: DVC and the ``plaque`` Jupyter kernel) next
on ``PATH``, and the clone first on ``PYTHONPATH``, so the clone's own code is what runs. The profile is the
clone's ``params.yaml`` ``profile`` (demo, as committed); ``--profile`` sets another there and
rewrites the clone's ``dvc.yaml`` for it (`plaque.pipeline`). Where ``nvidia-smi`` lists GPUs, each
stage also reports the peak of GPU memory in use above its level before the stage (`PeakGpuMemory`:
the most on any one GPU, every process counted, sampled every half second). Stops at the first
failing stage, printing the end of its output. Takes many minutes; ``python -m benchmarks --repro``
includes it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import torch
import yaml

from benchmarks.common import format_table, machine_info
from plaque.atomic import write_json_atomic
from plaque.paths import repo_root

DEFAULT_JSON = Path("results/bench/repro_times.json")
FAILURE_TAIL = 40  # lines of a failing stage's output that are printed
MEMORY_INTERVAL_S = 0.5  # how often `PeakGpuMemory` samples
PROFILE_LINE = re.compile(r"^profile:[ \t]*[^\s#]+", re.MULTILINE)


def _paths(entries: list[Any]) -> list[PurePosixPath]:
    """Paths of a dvc.yaml ``deps``/``outs`` list, whose items are a path or ``{path: options}``."""
    out = []
    for entry in entries:
        out += [PurePosixPath(p) for p in (entry if isinstance(entry, dict) else [entry])]
    return out


def _overlap(a: PurePosixPath, b: PurePosixPath) -> bool:
    """True when ``a`` and ``b`` are the same path or one lies inside the other."""
    n = min(len(a.parts), len(b.parts))
    return a.parts[:n] == b.parts[:n]


def stage_order(dvc_yaml: Path) -> list[str]:
    """The stages of ``dvc_yaml`` in pipeline order.

    A stage follows every stage with an output (``outs``, ``metrics``, ``plots``) that overlaps one
    of its ``deps``; otherwise stages keep their file order.

    Raises:
        ValueError: the dependencies form a cycle.
    """
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    outs = {name: _paths(s.get("outs", []) + s.get("metrics", []) + s.get("plots", [])) for name, s in stages.items()}
    needs = {
        name: {
            other
            for other in stages
            if other != name and any(_overlap(d, o) for d in _paths(s.get("deps", [])) for o in outs[other])
        }
        for name, s in stages.items()
    }
    order: list[str] = []
    while len(order) < len(stages):
        ready = [name for name in stages if name not in order and needs[name] <= set(order)]
        if not ready:
            raise ValueError(f"{dvc_yaml}: the stages {sorted(set(stages) - set(order))} depend on each other")
        order.append(ready[0])
    return order


def clone(root: Path, dest: Path) -> Path:
    """``git clone`` of the repository at ``root`` into ``dest/<root's name>``; the clone's path."""
    target = dest / root.name
    subprocess.run(["git", "clone", "--quiet", str(root), str(target)], check=True)
    return target


def repro_env(work: Path) -> dict[str, str]:
    """This environment with the running Python as ``python`` first on ``PATH`` (a launcher in
    ``work``'s parent folder, ``bin/``), then its own folder, and ``work`` first on ``PYTHONPATH``."""
    launcher = work.parent / "bin" / "python"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(launcher.parent), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work), env.get("PYTHONPATH")) if p)
    env.pop("VIRTUAL_ENV", None)
    return env


def set_profile(work: Path, profile: str, env: dict[str, str]) -> None:
    """Set ``profile`` in the clone's ``params.yaml`` (its comment kept) and rewrite its ``dvc.yaml`` for it.

    Raises:
        SystemExit: ``params.yaml`` has no such profile or no top-level ``profile:`` line, or
            `plaque.pipeline` refuses the profile (its message is printed).
    """
    params = work / "params.yaml"
    text = params.read_text()
    known = sorted(yaml.safe_load(text)["profiles"])
    if profile not in known:
        raise SystemExit(f"error: --profile {profile}: {params} has the profiles {known}")
    text, found = PROFILE_LINE.subn(lambda _: f"profile: {profile}", text, count=1)
    if not found:
        raise SystemExit(f"error: {params}: no top-level 'profile:' line to set")
    params.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "plaque.pipeline"], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: --profile {profile}: {(proc.stdout + proc.stderr).strip()}")


def nvidia_smi_used_mib() -> list[int] | None:
    """MiB of memory in use on each GPU that ``nvidia-smi`` lists; None without ``nvidia-smi`` or GPUs."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    used = [int(v) for v in proc.stdout.split() if v.isdigit()]
    return used if proc.returncode == 0 and used else None


class PeakGpuMemory:
    """Peak GPU memory in use while the ``with`` block runs, above the level on entry, in MiB.

    A thread calls ``read`` (MiB in use per GPU, or None where it cannot tell) every ``interval`` seconds;
    ``peak_mib`` is the largest rise on any one GPU over the samples, or None when ``read`` gave None
    on entry. It counts every process on the GPU and the caching allocators' reserve, which is what a
    card must hold; a peak shorter than ``interval`` can be missed.
    """

    def __init__(self, read: Callable[[], list[int] | None], interval: float = MEMORY_INTERVAL_S) -> None:
        self._read, self._interval = read, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._base: list[int] | None = None
        self.peak_mib: int | None = None

    def _take(self) -> None:
        used = self._read()
        if self._base is not None and used is not None and len(used) == len(self._base):
            rise = max(u - b for u, b in zip(used, self._base))
            self.peak_mib = max(rise, self.peak_mib or 0)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()

    def __enter__(self) -> PeakGpuMemory:
        self._base = self._read()
        if self._base is not None:
            self.peak_mib = 0
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._base is not None:
            self._stop.set()
            self._thread.join()
            self._take()


def time_stage(work: Path, stage: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``dvc repro -s stage`` in ``work``: seconds, peak GPU memory (MiB, None without GPUs), return code
    and, on failure, the end of its output."""
    with PeakGpuMemory(nvidia_smi_used_mib) as memory:
        start = time.perf_counter()
        proc = subprocess.run(["dvc", "repro", "-s", stage], cwd=work, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "stage": stage,
        "seconds": seconds,
        "gpu_peak_mib": memory.peak_mib,
        "returncode": proc.returncode,
    }
    if proc.returncode:
        result["output_tail"] = (proc.stdout + proc.stderr).splitlines()[-FAILURE_TAIL:]
    return result


def repro_times(
    root: Path, stages: list[str] | None = None, keep: Path | None = None, profile: str | None = None
) -> dict[str, Any]:
    """Clone ``root`` (set to ``profile`` when given) and time ``dvc repro -s`` of ``stages`` (default: all,
    in pipeline order) in the clone."""
    with tempfile.TemporaryDirectory() as tmp:
        work = clone(root, keep or Path(tmp))
        env = repro_env(work)
        if profile is not None:
            set_profile(work, profile, env)
        order = stage_order(work / "dvc.yaml")
        stages = order if stages is None else _checked(stages, order)
        commit = subprocess.run(
            ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        results = []
        for stage in stages:
            results.append(time_stage(work, stage, env))
            memory = "" if results[-1]["gpu_peak_mib"] is None else f", GPU peak {results[-1]['gpu_peak_mib']} MiB"
            print(f"  {stage}: {results[-1]['seconds']:.1f} s{memory}, exit {results[-1]['returncode']}", flush=True)
            if results[-1]["returncode"]:
                break
        used_profile = yaml.safe_load((work / "params.yaml").read_text())["profile"]
    return {
        "commit": commit,
        "profile": used_profile,
        "stages": results,
        "total_s": sum(r["seconds"] for r in results),
        "ok": len(results) == len(stages) and not results[-1]["returncode"],
    }


def _checked(stages: list[str], order: list[str]) -> list[str]:
    """``stages`` in pipeline order; ``SystemExit`` for a name dvc.yaml does not have."""
    unknown = [s for s in stages if s not in order]
    if unknown:
        raise SystemExit(f"error: --stages: {unknown} not in dvc.yaml (stages: {order})")
    return [s for s in order if s in stages]


def repro_lines(report: dict[str, Any]) -> list[str]:
    """The report as a table (with a GPU memory column where it was measured), plus the end of a failing
    stage's output."""
    gpu = any(r.get("gpu_peak_mib") is not None for r in report["stages"])
    rows = [
        (r["stage"], f"{r['seconds']:.1f}", *([r["gpu_peak_mib"]] if gpu else []), r["returncode"])
        for r in report["stages"]
    ]
    rows.append(("total", f"{report['total_s']:.1f}", *([""] if gpu else []), "" if report["ok"] else "FAILED"))
    lines = [
        f"dvc repro per stage in a fresh clone of {report['commit'][:12]}, profile {report['profile']}",
        format_table(("stage", "seconds", *(["GPU peak MiB"] if gpu else []), "exit"), rows),
    ]
    for r in report["stages"]:
        lines += [f"{r['stage']} output (end):", *r.get("output_tail", [])] if r["returncode"] else []
    return lines


def main(argv: list[str] | None = None) -> int:
    """Time the stages, print the table and write the JSON; 1 when a stage failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.repro_times", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="set this profile in the clone (default: as committed)")
    parser.add_argument("--stages", default=None, help="comma-separated stages (default: all of dvc.yaml)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    parser.add_argument("--keep", type=Path, default=None, help="clone into this folder and keep it")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    args = parser.parse_args(argv)
    root = repo_root()
    stages = None if args.stages is None else args.stages.split(",")
    if args.dry_run:
        print(
            f"git clone {root} <tmp>/{root.name}; PATH=<tmp>/bin:{Path(sys.executable).parent}:$PATH "
            f"(<tmp>/bin/python runs {sys.executable}) PYTHONPATH=<clone>"
        )
        if args.profile is not None:
            print(f"profile: {args.profile} in <clone>/params.yaml; python -m plaque.pipeline")
        else:
            order = stage_order(root / "dvc.yaml")
            print("\n".join(f"dvc repro -s {s}" for s in (order if stages is None else _checked(stages, order))))
        return 0
    report = repro_times(root, stages, args.keep, args.profile)
    print("\n".join(repro_lines(report)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    write_json_atomic(args.json, {"machine": machine_info(device, root), **report})
    print(f"written: {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
