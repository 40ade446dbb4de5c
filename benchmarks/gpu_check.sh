#!/usr/bin/env bash
# GPU check for a machine with NVIDIA GPUs (H100 class): the benchmark harness on the paper profile,
# FAA scaling up to 4096 tokens and a distributed Stage-2 smoke run on NCCL. Under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--profile paper] [--out DIR]
#                                [--venv .venv | --python PYTHON] [--wheels DIR] [--site DIR]
#                                [--ddp auto|always|never] [--steps 10] [--faa-max-grid 64]
#                                [--levers | --pipeline PROFILES]
#
# Each option can also come from the environment: DEVICE, PROFILE, OUT, VENV, PYTHON, WHEELS, SITE_DIR,
# DDP, STEPS, FAA_MAX_GRID; BENCH_TIMEOUT and DDP_TIMEOUT (seconds, default 330 and 150) cap the two parts,
# LEVER_TIMEOUT (default 240) each run of --levers, PIPELINE_TIMEOUT (default 1800) each profile's
# `dvc repro` under --pipeline.
# Output folder: --out, else $OUT, else results/bench/gpu. On a CPU machine, test it with
#   PROFILE=smoke bash benchmarks/gpu_check.sh --device cpu --steps 1 --faa-max-grid 16 --ddp always
#
# 1. Environment, one of two ways:
#    - --venv VENV (default .venv), a virtual environment made for this checkout. When it cannot
#      import this checkout's `plaque` with the versions pinned in pyproject.toml, `pip install -e .`
#      runs into it, nothing else. Offline, pass --wheels DIR, a folder holding every wheel that
#      install needs (`pip install --no-index --find-links DIR -e .`): torch==2.14.1 and
#      torchvision==0.29.1 (a CUDA build the driver supports), segment-anything==1.0, setuptools>=68
#      (the build backend), and the rest of pyproject.toml's [project] dependencies with their own.
#      Collect them on a connected Linux x86_64 machine with Python 3.11:
#        pip download --dest DIR 'setuptools>=68' torch==2.14.1 torchvision==0.29.1 .
#    - --python PYTHON, an interpreter that already has a CUDA build of PyTorch and torchvision (a
#      GPU machine's own image, say). Nothing is installed into it: --wheels DIR, if given, holds
#      wheels of the packages it lacks, unpacked without their dependencies into a temporary folder
#      that goes on PYTHONPATH after this checkout (and its bin/ on PATH). --site DIR names that folder
#      and keeps it: what earlier runs unpacked into it stays, so that a large set of wheels can be
#      brought to an offline machine in parts, one run each. `benchmarks/gpu_wheels.txt` lists what the
#      benchmarks and the Stage-1/2 entry points import beyond a CUDA PyTorch image (segment-anything,
#      lpips, pydicom, nibabel, dvclive and, for dvclive, dvc with its pure-Python helpers) and the
#      command that downloads them; --pipeline needs `benchmarks/gpu_pipeline_wheels.txt` as well.
#      Versions that differ from pyproject.toml's pins go to OUT/env.txt.
# 2. OUT/env.txt: date, kernel, nvidia-smi, Python and torch/CUDA versions, pins not met.
# 3. OUT/benchmarks.{txt,json}: python -m benchmarks --device DEVICE --profile PROFILE --batch-size 8
#    --methods ours,no_prior,sam_lora,cat_sam,ours_class_tokens --skip-loader
#    --faa-max-grid 64 (FAA scaling 256 ... 4096 tokens).
#    OUT/sam_attention.{txt,json}: python -m benchmarks.sam_attention --device DEVICE --batch 8
#    --grid FAA_MAX_GRID: SAM's own encoder attention against the fused one (time, memory, bf16
#    error, flash kernel).
#    OUT/flex.txt, OUT/benchmarks_flex.{txt,json}: the flex attention kernel (plaque.models.attention):
#    its GPU test against SAM's attention within bf16 tolerance (where pytest is importable), then
#    `python -m benchmarks --attention flex --methods ours` (the step with the attention lever alone).
# 4. OUT/ddp.txt and OUT/ddp/: a smoke cohort in a temporary folder (plaque.data.phantom,
#    plaque.data.preprocess, plaque.train.stage1, one process each), then plaque.train.stage2 under
#    `python -m torch.distributed.run --standalone --nproc_per_node N`, all on the smoke profile; it
#    passes when the run's metrics.json says world_size N. N is 2 when `nvidia-smi -L` lists two or
#    more GPUs, else 1 (one rank, which still initialises NCCL and trains in bf16). --ddp always
#    runs 2 ranks whatever the count (on the CPU with --device cpu, where the ranks use gloo);
#    --ddp never skips the part.
# 5. OUT/summary.txt: each part's status and seconds. Exit status 1 when a part failed.
#
# With --levers, parts 3 and 4 give way to the lever table, the training step with one speed-up at a time
# (expect 8 to 12 minutes on one H200 with the paper profile: run it on its own): `ours` stepped by
# `python -m benchmarks` once per row of LEVER_RUNS (below; the environment may replace it, one run per line),
# each lever alone against the baseline and then all of them together, into
# OUT/levers/<run>.{json,txt}, and the table of `python -m benchmarks.levers` in OUT/levers.txt (step time,
# images/s, reference TFLOP/s, MFU, peak memory). Micro-batches 16 and 32 stand for `train.accumulate` keeping
# the effective batch: the optimiser sees the same batch, each step more images.
#
# With --pipeline PROFILES (comma-separated, such as paper_smoke,demo), parts 3 and 4 give way to the whole
# pipeline, once per profile: `python -m benchmarks.repro_times --profile P` runs `dvc repro` stage by stage in
# a fresh clone of the committed HEAD set to profile P, with each stage's seconds and peak GPU memory, into
# OUT/pipeline_P.{txt,json}; then `python -m benchmarks.segment` segments that run's test patients with its
# `ours` model (plaque.segment, one untimed warm-up first), seconds per patient and voxel Dice, into
# OUT/segment_P.{txt,json}. paper_smoke is the paper's networks (SAM ViT-B at 1024², random weights) on a
# 3-patient phantom; demo is `make demo`'s run. On one H200 expect each to take minutes (the demo's target is
# 10); running profiles in separate commands keeps one profile's failure from costing the other's figures.
# First the stages' packages and the dvc command are checked, and the Jupyter kernel their notebooks name is
# registered for the interpreter in a temporary folder on JUPYTER_PATH. A profile whose run fails or times
# out has its leftover processes stopped before the next one starts.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-paper}
OUT_DIR=${OUT:-$ROOT/results/bench/gpu}
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-}
WHEELS=${WHEELS:-}
DDP=${DDP:-auto}
STEPS=${STEPS:-10}
FAA_MAX_GRID=${FAA_MAX_GRID:-64}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-330}
DDP_TIMEOUT=${DDP_TIMEOUT:-150}
LEVER_TIMEOUT=${LEVER_TIMEOUT:-240}
PIPELINE_TIMEOUT=${PIPELINE_TIMEOUT:-1800}
SITE_DIR=${SITE_DIR:-}
LEVERS=0
PIPELINE=
# <run name> <options of python -m benchmarks>, in the order of the table
LEVER_RUNS=${LEVER_RUNS:-"baseline --batch-size 8
batch16 --batch-size 16
batch32 --batch-size 32
flex --batch-size 8 --attention flex
default_adamw --batch-size 8 --adamw default
compile --batch-size 8 --compile default
cuda_graphs --batch-size 8 --compile reduce-overhead
all --batch-size 32 --attention flex --compile default"}

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

die() { echo "error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --site) SITE_DIR=$2; shift 2 ;;
    --ddp) DDP=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --faa-max-grid) FAA_MAX_GRID=$2; shift 2 ;;
    --levers) LEVERS=1; shift ;;
    --pipeline) PIPELINE=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $DEVICE == cuda || $DEVICE == cpu ]] || die "--device must be cuda or cpu, got $DEVICE"
[[ $DDP == auto || $DDP == always || $DDP == never ]] || die "--ddp must be auto, always or never, got $DDP"
[[ -z $SITE_DIR || -n $PYTHON ]] || die "--site goes with --python (a virtual environment installs into itself)"
[[ $LEVERS == 0 || -z $PIPELINE ]] || die "--levers and --pipeline are separate runs: pick one"
[[ -z $PIPELINE || $PIPELINE =~ ^[a-z_]+(,[a-z_]+)*$ ]] || die "--pipeline takes profile names separated by commas, got '$PIPELINE'"
if [[ -n $PYTHON ]]; then
  PY=$(command -v "$PYTHON") || die "--python $PYTHON: no such interpreter"
else
  PY=$VENV/bin/python
  [[ -x $PY ]] || die "$PY not found: create the virtual environment first (python3.11 -m venv $VENV)"
fi
[[ -z $WHEELS || -d $WHEELS ]] || die "--wheels $WHEELS: no such folder"
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$ROOT"
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"
FAILED=0

# Record "<part>: ok after <seconds> s" (or FAILED (exit N)) in the summary; a failure marks the run failed.
record() {
  echo "$1: $([[ $2 == 0 ]] && echo ok || echo "FAILED (exit $2)") after $3 s" | tee -a "$SUMMARY"
  [[ $2 == 0 ]] || FAILED=1
}

# Print the pyproject.toml pins that the installed packages do not meet; fail when this checkout's
# plaque cannot be imported.
check_environment() {
  "$PY" - <<'EOF'
import importlib.metadata as md
import pathlib
import sys
import tomllib

import plaque

if pathlib.Path(plaque.__file__).resolve().parents[1] != pathlib.Path.cwd().resolve():
    sys.exit(f"plaque is imported from {plaque.__file__}, not from this checkout")
deps = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]["dependencies"]
for name, version in (d.split("==") for d in deps if "==" in d):
    try:
        found = md.version(name)
    except md.PackageNotFoundError:
        found = "missing"
    if found.split("+")[0] != version:
        print(f"pin not met: {name}=={version}, found {found}")
EOF
}

install() {
  local site=$SITE_DIR unpacked
  if [[ -n $PYTHON ]]; then
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    if [[ -n $WHEELS || -n $site ]]; then
      [[ -n $site ]] || site=$(mktemp -d)
      mkdir -p "$site"
      if [[ -n $WHEELS ]]; then
        echo "environment: $PY, with the wheels of $WHEELS unpacked into $site (no dependencies)"
        # unpacked apart, then merged: pip --target would replace the bin/ of wheels unpacked before
        unpacked=$(mktemp -d)
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$unpacked" "$WHEELS"/*.whl || return 1
        cp -a "$unpacked"/. "$site"/ && rm -rf "$unpacked"
      else
        echo "environment: $PY, with the packages unpacked earlier into $site"
      fi
      export PYTHONPATH=$PYTHONPATH:$site PATH=$site/bin:$PATH
    else
      echo "environment: $PY as it is, with this checkout on PYTHONPATH"
    fi
    "$PY" -c 'import benchmarks, plaque.train.stage1, plaque.train.stage2' || {
      echo "environment: $PY cannot import the benchmarks and the training entry points (see above)" >&2
      return 1
    }
    check_environment
  elif [[ -z $(check_environment 2>/dev/null || echo failed) ]]; then
    echo "environment: $VENV has this checkout's plaque and the pinned packages; nothing installed"
  else
    echo "environment: pip install -e . into $VENV${WHEELS:+ from $WHEELS}"
    "$PY" -m pip install --quiet ${WHEELS:+--no-index --find-links "$WHEELS"} -e .
  fi
}

describe() {
  date -Is
  uname -a
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not available"; fi
  "$PY" -c '
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}")'
  check_environment
}

benchmarks() {
  local methods
  methods=$("$PY" -c '
from plaque.methods import METHODS
print(",".join(m for m in ("ours", "no_prior", "sam_lora", "cat_sam", "ours_class_tokens") if m in METHODS))')
  timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks --device "$DEVICE" --profile "$PROFILE" --batch-size 8 \
    --methods "$methods" --skip-loader --faa-max-grid "$FAA_MAX_GRID" --steps "$STEPS" \
    --json "$OUT_DIR/benchmarks.json" 2>&1 | tee "$OUT_DIR/benchmarks.txt"
}

sam_attention() {
  timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks.sam_attention --device "$DEVICE" --batch 8 --grid "$FAA_MAX_GRID" \
    --json "$OUT_DIR/sam_attention.json" 2>&1 | tee "$OUT_DIR/sam_attention.txt"
}

flex() {
  local failed=0
  if "$PY" -c 'import pytest' 2>/dev/null; then
    (cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider tests/models/test_attention.py -k flex) 2>&1 |
      tee "$OUT_DIR/flex.txt" || failed=1
  else
    echo "flex: pytest not importable here, the GPU test of the kernel skipped" | tee "$OUT_DIR/flex.txt"
  fi
  timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks --device "$DEVICE" --profile "$PROFILE" --batch-size 8 \
    --methods ours --attention flex --skip-loader --skip-faa --steps "$STEPS" \
    --json "$OUT_DIR/benchmarks_flex.json" 2>&1 | tee "$OUT_DIR/benchmarks_flex.txt" || failed=1
  return $failed
}

# Each row of LEVER_RUNS on `ours`, then the table; a run that fails or times out is reported and left out.
levers() {
  local dir=$OUT_DIR/levers failed=0 name options done_runs=()
  mkdir -p "$dir"
  while read -r name options; do
    echo "lever run $name: $options"
    # shellcheck disable=SC2086  # the options are words
    if timeout "$LEVER_TIMEOUT" "$PY" -m benchmarks --device "$DEVICE" --profile "$PROFILE" --methods ours \
      --skip-loader --skip-faa --steps "$STEPS" $options --json "$dir/$name.json" >"$dir/$name.txt" 2>&1; then
      done_runs+=("$dir/$name.json")
    else
      failed=1
      echo "lever run $name: FAILED or timed out after $LEVER_TIMEOUT s; its last lines:"
      tail -n 5 "$dir/$name.txt"
    fi
  done <<<"$LEVER_RUNS"
  [[ ${#done_runs[@]} -gt 0 ]] && "$PY" -m benchmarks.levers "${done_runs[@]}" | tee "$OUT_DIR/levers.txt"
  return $failed
}

# What the stages need beyond the benchmarks: their packages, the dvc command, and the Jupyter kernel their
# notebooks name, registered for this interpreter in KERNEL_DIR (first on JUPYTER_PATH).
pipeline_environment() {
  local kernel dvc
  "$PY" -c 'import dvc, papermill, ipykernel, nnunetv2, skan, skimage, highdicom, nrrd, pylibjpeg' || {
    echo "pipeline: $PY cannot import what the stages need (benchmarks/gpu_pipeline_wheels.txt)" >&2
    return 1
  }
  # the stages run with the interpreter's folder first on PATH (benchmarks.repro_times)
  dvc=$(PATH=$(dirname "$PY"):$PATH command -v dvc) || { echo "pipeline: no dvc command on PATH" >&2; return 1; }
  kernel=$("$PY" -c 'from plaque.notebook import KERNEL; print(KERNEL)') || return 1
  export JUPYTER_PATH=$KERNEL_DIR/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}
  "$PY" -m ipykernel install --prefix "$KERNEL_DIR" --name "$kernel" >/dev/null || return 1
  echo "pipeline: the stages' packages import, $dvc, kernel $kernel for $PY"
}

# Stop every process working in PIPELINE_WORK: a timed-out stage's training would run on otherwise.
stop_leftovers() {
  local proc
  for proc in /proc/[0-9]*; do
    [[ $(readlink "$proc/cwd" 2>/dev/null) == "$PIPELINE_WORK"/* ]] && kill -9 "${proc#/proc/}" 2>/dev/null
  done
  return 0
}

# `dvc repro` of profile $1 in a fresh clone under PIPELINE_WORK, stage by stage.
pipeline_profile() {
  timeout "$PIPELINE_TIMEOUT" "$PY" -m benchmarks.repro_times --profile "$1" --keep "$PIPELINE_WORK/$1" \
    --json "$OUT_DIR/pipeline_$1.json" 2>&1 | tee "$OUT_DIR/pipeline_$1.txt"
}

# The clone that `pipeline_profile $1` ran in.
profile_clone() {
  echo "$PIPELINE_WORK/$1/$(basename "$ROOT")"
}

# plaque.segment on the test patients of profile $1's run, with its `ours` model.
segment_profile() {
  local clone
  clone=$(profile_clone "$1")
  "$PY" -m benchmarks.segment --checkpoint "$clone/models/stage2/ours/best.pt" --raw "$clone/data/raw" \
    --data "$clone/data/processed" --per-patient "$clone/reports/tables/ours_per_patient.csv" \
    --params "$clone/params.yaml" --device "$DEVICE" --threads "$(nproc)" --warmup 1 \
    --json "$OUT_DIR/segment_$1.json" 2>&1 | tee "$OUT_DIR/segment_$1.txt"
}

# The smoke cohort, a Stage-1 prior, then Stage-2 on NPROC ranks (run by `bash -c` under `timeout`).
ddp_smoke() {
  set -euo pipefail
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [[ $DEVICE == cpu ]]; then export CUDA_VISIBLE_DEVICES=""; fi
  set -x
  "$PY" -m plaque.data.phantom --out "$work/raw" --profile smoke
  "$PY" -m plaque.data.preprocess --raw "$work/raw" --out "$work/processed" --profile smoke
  "$PY" -m plaque.train.stage1 --data "$work/processed" --out "$work/stage1" --results "$OUT_DIR/ddp/stage1" \
    --profile smoke --fresh
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m plaque.train.stage2 --method ours \
    --data "$work/processed" --prior "$work/stage1/best.pt" --out "$work/stage2" --results "$OUT_DIR/ddp/stage2" \
    --predictions "$work/predictions" --profile smoke --fresh
  "$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("world_size", m["world_size"], "device", m["device"], "macro_dice", m["macro_dice"])
sys.exit(m["world_size"] != int(sys.argv[2]))' "$OUT_DIR/ddp/stage2/metrics.json" "$NPROC"
}

ddp() {
  export -f ddp_smoke
  export PY OUT_DIR DEVICE NPROC
  timeout "$DDP_TIMEOUT" bash -c ddp_smoke 2>&1 | tee "$OUT_DIR/ddp.txt"
}

# Run a part, timing it; its failure is recorded, not fatal.
part() {
  local name=$1 start status=0
  shift
  start=$SECONDS
  "$@" || status=$?
  record "$name" "$status" $((SECONDS - start))
}

echo "gpu_check: device $DEVICE, $([[ -n $PIPELINE ]] && echo "pipeline $PIPELINE" || echo "profile $PROFILE"), output $OUT_DIR"
part environment install
[[ $FAILED == 0 ]] || { echo "gpu_check: stopped, the environment is not usable" >&2; exit 1; }
describe >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
if [[ $DEVICE == cuda ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  die "--device cuda, but torch sees no CUDA device (see $OUT_DIR/env.txt)"
fi
if [[ $LEVERS == 1 ]]; then
  part levers levers
  echo "gpu_check: done in $SECONDS s; figures in $OUT_DIR"
  exit $FAILED
fi
if [[ -n $PIPELINE ]]; then
  if [[ $DEVICE == cpu ]]; then export CUDA_VISIBLE_DEVICES=""; fi
  PIPELINE_WORK=$(mktemp -d)
  KERNEL_DIR=$(mktemp -d)
  trap 'stop_leftovers; rm -rf "$PIPELINE_WORK" "$KERNEL_DIR"' EXIT
  part pipeline_environment pipeline_environment
  [[ $FAILED == 0 ]] || { echo "gpu_check: stopped, the stages cannot run here" >&2; exit 1; }
  for profile in ${PIPELINE//,/ }; do
    part "pipeline_$profile" pipeline_profile "$profile"
    stop_leftovers
    clone=$(profile_clone "$profile")
    if [[ -f $clone/models/stage2/ours/best.pt && -f $clone/reports/tables/ours_per_patient.csv ]]; then
      part "segment_$profile" segment_profile "$profile"
    else
      echo "segment_$profile: skipped (the run has no evaluated ours model)" | tee -a "$SUMMARY"
    fi
  done
  echo "gpu_check: done in $SECONDS s; figures in $OUT_DIR"
  exit $FAILED
fi
part benchmarks benchmarks
part sam_attention sam_attention
if [[ $DEVICE == cuda ]]; then
  part flex_attention flex
else
  echo "flex_attention: skipped (the flex kernel trains on a GPU only)" | tee -a "$SUMMARY"
fi
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
NPROC=$([[ $DDP == always || ${GPUS:-0} -ge 2 ]] && echo 2 || echo 1)
if [[ $DDP == never ]]; then
  echo "ddp_smoke: skipped (--ddp never)" | tee -a "$SUMMARY"
elif [[ $DEVICE == cpu && $NPROC == 1 ]]; then
  echo "ddp_smoke: skipped (--device cpu runs it only with --ddp always)" | tee -a "$SUMMARY"
else
  echo "ddp_smoke: $NPROC rank(s) (nvidia-smi -L lists ${GPUS:-0} GPU(s); --ddp $DDP)"
  part "ddp_smoke_${NPROC}_ranks" ddp
fi
echo "gpu_check: done in $SECONDS s; figures in $OUT_DIR"
exit $FAILED
