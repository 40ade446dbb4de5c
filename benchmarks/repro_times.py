"""End-to-end `dvc repro` time of the pipeline, stage by stage, in a fresh clone of the repository.

    python -m benchmarks.repro_times [--stages phantom,preprocess,...] [--json results/bench/repro_times.json]
                                     [--keep DIR] [--dry-run]

Clones the repository's committed ``HEAD`` (uncommitted changes are not part of the run) into a
temporary folder (or ``--keep DIR``), then runs ``dvc repro -s <stage>`` there for each stage in
pipeline order (`stage_order`) and times it. The clone runs with this repository's ``.venv/bin``
first on ``PATH`` (its Python, DVC and the ``plaque`` Jupyter kernel) and the clone first on
``PYTHONPATH``, so the clone's own code is what runs. The profile is the clone's ``params.yaml``
``profile`` (demo, as committed). Stops at the first failing stage, printing the end of its output.
Takes many minutes; ``python -m benchmarks --repro`` includes it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from benchmarks.common import format_table, machine_info
from plaque.atomic import write_json_atomic
from plaque.paths import repo_root

DEFAULT_JSON = Path("results/bench/repro_times.json")
FAILURE_TAIL = 40  # lines of a failing stage's output that are printed


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


def repro_env(root: Path, work: Path) -> dict[str, str]:
    """This environment with ``root``'s ``.venv/bin`` first on ``PATH`` and ``work`` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(root / ".venv" / "bin"), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work), env.get("PYTHONPATH")) if p)
    env.pop("VIRTUAL_ENV", None)
    return env


def time_stage(work: Path, stage: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``dvc repro -s stage`` in ``work``: seconds, return code and, on failure, the end of its output."""
    start = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", "-s", stage], cwd=work, env=env, capture_output=True, text=True)
    result: dict[str, Any] = {"stage": stage, "seconds": time.perf_counter() - start, "returncode": proc.returncode}
    if proc.returncode:
        result["output_tail"] = (proc.stdout + proc.stderr).splitlines()[-FAILURE_TAIL:]
    return result


def repro_times(root: Path, stages: list[str] | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Clone ``root`` and time ``dvc repro -s`` of ``stages`` (default: all, in pipeline order) in the clone."""
    order = stage_order(root / "dvc.yaml")
    stages = order if stages is None else _checked(stages, order)
    with tempfile.TemporaryDirectory() as tmp:
        work = clone(root, keep or Path(tmp))
        env = repro_env(root, work)
        commit = subprocess.run(
            ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        results = []
        for stage in stages:
            results.append(time_stage(work, stage, env))
            print(f"  {stage}: {results[-1]['seconds']:.1f} s, exit {results[-1]['returncode']}", flush=True)
            if results[-1]["returncode"]:
                break
    return {
        "commit": commit,
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
    """The report as a table, plus the end of a failing stage's output."""
    rows = [(r["stage"], f"{r['seconds']:.1f}", r["returncode"]) for r in report["stages"]]
    rows.append(("total", f"{report['total_s']:.1f}", "" if report["ok"] else "FAILED"))
    lines = [
        f"dvc repro per stage in a fresh clone of {report['commit'][:12]}",
        format_table(("stage", "seconds", "exit"), rows),
    ]
    for r in report["stages"]:
        lines += [f"{r['stage']} output (end):", *r.get("output_tail", [])] if r["returncode"] else []
    return lines


def main(argv: list[str] | None = None) -> int:
    """Time the stages, print the table and write the JSON; 1 when a stage failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.repro_times", description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=None, help="comma-separated stages (default: all of dvc.yaml)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output (default {DEFAULT_JSON})")
    parser.add_argument("--keep", type=Path, default=None, help="clone into this folder and keep it")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    args = parser.parse_args(argv)
    root = repo_root()
    order = stage_order(root / "dvc.yaml")
    stages = order if args.stages is None else _checked(args.stages.split(","), order)
    if args.dry_run:
        print(f"git clone {root} <tmp>/{root.name}; PATH={root / '.venv' / 'bin'}:$PATH PYTHONPATH=<clone>")
        print("\n".join(f"dvc repro -s {s}" for s in stages))
        return 0
    report = repro_times(root, stages, args.keep)
    print("\n".join(repro_lines(report)))
    write_json_atomic(args.json, {"machine": machine_info(torch.device("cpu"), root), **report})
    print(f"written: {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
