"""The training loop shared by Stage-1, Stage-2 and the baselines.

`fit` runs the whole protocol of the paper's appendix 1.2 (per-process batch, validation every
``val_every`` epochs, early stopping after ``patience`` validations without improvement) under
DDP when launched by `torchrun` and as a single process otherwise. Rank 0 alone validates, logs,
writes checkpoints and DVCLive metrics; the validation result is broadcast so every rank takes
the same stopping decision.

The learning rate follows `plaque.schedule.lr_factor` (warmup, then constant or cosine decay), set per
optimizer step over the run's ``max_epochs``; ``warmup`` 0 and ``constant`` keep the optimizer's rate.

Resumability: ``last.pt`` is written atomically at the end of every epoch with everything the
next epoch depends on (weights, optimizer, learning-rate schedule, early-stopping state, history, the RNG
states of every rank, and the caller's ``extra_state``). It also holds the run's fingerprint: a
SHA-256 of the code of every loaded ``plaque`` module and of the caller's ``record`` (the
configuration). A ``last.pt`` of other code or settings is never resumed: the run starts afresh,
with a warning, so a checkpoint folder DVC keeps across reruns (``persist``) resumes an interrupted
run and only that. The training order is a function of
``(seed, epoch)`` alone (`EpochSampler.set_epoch`), so a run killed at any point and
started again ends with the same result as an uninterrupted run (bit-identical weights on CPU).
Validation restores every random generator it touched, so ``val_every`` and ``val_stride`` choose which
epochs are checked, never the weights an epoch ends with.
On the CPU the result also depends on the number of intra-op threads (``torch.get_num_threads()``,
from ``OMP_NUM_THREADS`` or the process's CPU affinity; `torchrun` sets 1 per process when it starts
several): the run records it as ``cpu_threads`` and a ``last.pt`` written with another count is not resumed.
DataLoader workers are not persistent for the same reason: they are re-seeded from the restored
generator each epoch. Models and ``extra_state`` must keep all their state in ``state_dict()``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from dvclive import Live
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from plaque.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from plaque.errors import InputError
from plaque.precision import autocast, grad_scaler, resolve_precision
from plaque.progress import progress
from plaque.schedule import DECAYS, lr_factor
from plaque.train.distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, gather_object

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
FORMAT = 1

StepFn = Callable[[nn.Module, Any, DistInfo], tuple[Tensor, Mapping[str, float | Tensor]]]
ValidateFn = Callable[[nn.Module, DataLoader, DistInfo], Mapping[str, float]]


class Stateful(Protocol):
    """Anything with ``state_dict``/``load_state_dict`` (an `nn.Module`, a prototype bank, ...)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class FitConfig:
    """How to train. The first seven fields and ``accumulate``, ``precision``, ``compile`` are `params.yaml`'s
    ``train`` section (see `from_params`).

    ``samples_per_epoch`` is ``"all"`` (every training item once per epoch, the paper's protocol)
    or N: each epoch trains on N items drawn afresh (`EpochSampler`), ``rare_share`` of them from the
    items `fit`'s ``rare`` marks (params' ``train.plaque_share``: slices with plaque).

    ``accumulate`` micro-batches of ``batch_size_per_gpu`` make one optimizer step (the effective batch is
    their product with the number of processes; DDP synchronises gradients on the last micro-batch only).
    ``precision`` is `plaque.precision`'s (``auto``, ``bf16``, ``fp16`` with a gradient scaler, ``fp32``).
    ``compile`` runs the training forward through ``torch.compile``. ``warmup`` and ``decay`` shape the
    learning rate over the run (`plaque.schedule.lr_factor`): the optimizer's rate is the peak. The Stage-2
    trainer passes ``train.warmup`` and ``train.decay``; Stage-1 and the foundation stage keep their constant rate.

    Attributes:
        monitor: key of ``validate()``'s result used for model selection and early stopping.
        mode: ``"max"`` when a higher ``monitor`` is better (Dice), ``"min"`` otherwise (a loss).
        out_dir: folder of ``last.pt`` and ``best.pt``.
        live_dir: DVCLive folder, or ``None`` for no DVCLive output.
        resume: continue from ``out_dir/last.pt`` when it exists; ``False`` deletes ``last.pt`` and
            ``best.pt`` and starts afresh.
        find_unused_parameters: passed to DDP, for models whose forward skips some trainable parameters.
    """

    max_epochs: int
    val_every: int
    patience: int
    batch_size_per_gpu: int
    seed: int
    num_workers: int
    samples_per_epoch: int | Literal["all"]
    monitor: str
    mode: Literal["max", "min"]
    out_dir: Path
    live_dir: Path | None = None
    resume: bool = True
    find_unused_parameters: bool = False
    rare_share: float = 0.0
    accumulate: int = 1
    precision: str = "fp32"
    compile: bool = False
    warmup: float = 0.0
    decay: str = "constant"

    def __post_init__(self) -> None:
        for key in ("max_epochs", "val_every", "patience", "batch_size_per_gpu", "accumulate"):
            if getattr(self, key) < 1:
                raise InputError(f"train.{key}", f"expected a positive integer, got {getattr(self, key)!r}")
        if self.samples_per_epoch != "all" and (
            not isinstance(self.samples_per_epoch, int) or self.samples_per_epoch < 1
        ):
            raise InputError(
                "train.samples_per_epoch", f"expected 'all' or a positive integer, got {self.samples_per_epoch!r}"
            )
        if not 0.0 <= self.rare_share < 1.0:
            raise InputError("train.plaque_share", f"expected a share in [0, 1), got {self.rare_share!r}")
        if not 0.0 <= self.warmup <= 0.5:
            raise InputError("train.warmup", f"expected a share in [0, 0.5], got {self.warmup!r}")
        if self.decay not in DECAYS:
            raise InputError("train.decay", f"{self.decay!r} is not one of {list(DECAYS)}")
        if self.mode not in ("max", "min"):
            raise InputError("mode", f"expected 'max' or 'min', got {self.mode!r}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.live_dir is not None:
            object.__setattr__(self, "live_dir", Path(self.live_dir))

    @classmethod
    def from_params(cls, train: Mapping[str, Any], **rest: Any) -> FitConfig:
        """Build from the resolved ``train`` section (``nproc_per_node`` is the launcher's) plus the other fields."""
        keys = (
            "max_epochs",
            "val_every",
            "patience",
            "batch_size_per_gpu",
            "seed",
            "num_workers",
            "samples_per_epoch",
            "accumulate",
            "precision",
            "compile",
        )
        return cls(**{k: train[k] for k in keys}, rare_share=train["plaque_share"], **rest)


class EpochSampler(DistributedSampler):
    """`DistributedSampler` (shuffled) over ``samples`` of the dataset's items per epoch.

    ``samples="all"`` is `DistributedSampler` itself (``rare`` is ignored). With N, epoch ``e`` draws N
    items with a generator seeded by ``seed + e``, the same on every rank:

    - without ``rare`` (or ``rare_share`` 0): N distinct items (all of them when the dataset is smaller);
    - with ``rare`` (a bool per item) and ``rare_share`` s: round(s·N) items from the rare ones (without
      replacement while there are enough, else with) and the rest from the others without replacement,
      shuffled together — as nnU-Net oversamples foreground patches. When the rare items already make
      up at least s of the dataset, the plain draw is used.

    Rank r takes every ``num_replicas``-th item from position r (padded by repetition to a multiple of
    ``num_replicas``, as `DistributedSampler` pads). The order depends on ``(seed, epoch)`` alone, so a
    resumed run sees the items an uninterrupted one would.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        samples: int | Literal["all"],
        num_replicas: int,
        rank: int,
        seed: int,
        rare: Sequence[bool] | None = None,
        rare_share: float = 0.0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        n = len(dataset)  # type: ignore[arg-type]
        self.samples = n if samples == "all" else min(int(samples), n)
        if samples != "all":
            self.num_samples = math.ceil(self.samples / num_replicas)
            self.total_size = self.num_samples * num_replicas
        self.rare = None
        if rare is not None and samples != "all":
            if len(rare) != n:
                raise ValueError(f"rare marks {len(rare)} items, the dataset has {n}")
            mask = torch.as_tensor(np.asarray(rare, dtype=bool))
            if 0 < int(mask.sum()) < rare_share * n:
                self.rare, self.rare_count = mask, round(rare_share * self.samples)

    def __iter__(self):  # type: ignore[override]
        if self.rare is None and self.samples == len(self.dataset):  # type: ignore[arg-type]
            return super().__iter__()
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        if self.rare is None:
            picked = torch.randperm(len(self.dataset), generator=g)[: self.samples]  # type: ignore[arg-type]
        else:
            rare, other = self.rare.nonzero()[:, 0], (~self.rare).nonzero()[:, 0]
            k = self.rare_count
            rare_pick = (
                rare[torch.randperm(len(rare), generator=g)[:k]]
                if k <= len(rare)
                else rare[torch.randint(len(rare), (k,), generator=g)]
            )
            rest = min(self.samples - k, len(other))
            other_pick = other[torch.randperm(len(other), generator=g)[:rest]]
            both = torch.cat([rare_pick, other_pick])
            picked = both[torch.randperm(len(both), generator=g)]
        order = picked.tolist()
        order += order[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas])


@dataclass
class FitResult:
    """What a run did. Identical on every rank.

    Attributes:
        epochs_run: epochs trained in total, including those before a resume.
        best_epoch, best_score, best_metrics: the validation kept in ``best.pt`` (``None``/empty if none).
        stopped_early: the patience ran out before ``max_epochs``.
        history: one dict per epoch: ``epoch``, ``lr``, ``train/<scalar>`` (mean over steps and
            ranks) and, on validation epochs, ``val/<metric>``.
    """

    epochs_run: int
    best_epoch: int | None
    best_score: float | None
    best_metrics: dict[str, float]
    stopped_early: bool
    world_size: int
    effective_batch_size: int
    history: list[dict[str, float]]
    last_path: Path
    best_path: Path


@dataclass
class EarlyStopping:
    """Stops after ``patience`` consecutive validations without a strictly better score (NaN never improves)."""

    mode: str
    patience: int
    best_score: float | None = None
    best_epoch: int | None = None
    bad_validations: int = 0
    stopped: bool = False

    def update(self, score: float, epoch: int) -> bool:
        """Record one validation; True when it is the new best."""
        better = not math.isnan(score) and (
            self.best_score is None or (score > self.best_score if self.mode == "max" else score < self.best_score)
        )
        if better:
            self.best_score, self.best_epoch, self.bad_validations = score, epoch, 0
        else:
            self.bad_validations += 1
        self.stopped = self.bad_validations >= self.patience
        return better

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def seed_everything(seed: int) -> None:
    """Seed the torch (CPU and CUDA), NumPy and Python generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in nested dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: Dataset,
    val_set: Dataset,
    step: StepFn,
    validate: ValidateFn,
    cfg: FitConfig,
    info: DistInfo,
    extra_state: Stateful | None = None,
    rare: Sequence[bool] | None = None,
    record: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` until ``cfg.max_epochs`` or until early stopping; resume from ``last.pt`` if present.

    Args:
        model: moved to ``info.device``; ``optimizer`` must hold its parameters. Seed before building it
            (`seed_everything`): DDP copies rank 0's initial weights to the other ranks.
        step: ``step(model, batch, info) -> (loss, scalars)`` for one training batch already on
            ``info.device``, run under the precision's autocast; ``model`` is the DDP wrapper when
            ``world_size > 1`` (compiled when ``cfg.compile``). ``loss`` is a 0-d
            tensor; ``scalars`` (floats or 0-d tensors, the same keys on every call and rank) are logged
            as ``train/<key>``. The trainer runs ``zero_grad``, ``backward`` (scaled, divided by the accumulation
            group) and ``optimizer.step``.
        validate: ``validate(model, loader, info) -> metrics`` on rank 0 only, over the whole
            ``val_set``, with the unwrapped model in eval mode under `torch.no_grad`; the batches
            come from the loader as stored (move them with `to_device`). ``metrics`` must hold ``cfg.monitor``.
        rare: a bool per training item, the items ``cfg.rare_share`` of each epoch's draw comes from
            when ``cfg.samples_per_epoch`` is a number (`EpochSampler`); ignored with ``"all"``.
        extra_state: state outside the model that training changes (e.g. Stage-1 class prototypes);
            saved in both checkpoints and restored on resume.
        record: what else ``best.pt`` must carry to be used on its own (e.g. the method and its resolved
            configuration, `plaque.checkpoint.model_record`); weights-only values.

    Returns:
        The run's `FitResult`, on every rank.

    Raises:
        FloatingPointError: a non-finite loss (naming epoch and step), raised before that update.
        InputError: an empty dataset, or a ``last.pt`` that is unreadable or from other settings.
    """
    for name, dataset in (("train_set", train_set), ("val_set", val_set)):
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise InputError(name, "the dataset is empty")
    last_path, best_path = cfg.out_dir / LAST, cfg.out_dir / BEST
    effective_batch = cfg.batch_size_per_gpu * info.world_size * cfg.accumulate
    precision = resolve_precision(cfg.precision, info.device)
    scaler = grad_scaler(info.device, precision)
    run_config = {
        **{
            k: getattr(cfg, k)
            for k in (
                "batch_size_per_gpu",
                "val_every",
                "patience",
                "seed",
                "monitor",
                "mode",
                "accumulate",
                "compile",
                "warmup",
                "decay",
            )
        },
        "precision": precision,
        "world_size": info.world_size,
        "cpu_threads": torch.get_num_threads() if info.device.type == "cpu" else None,
        "extra_state": extra_state is not None,
        "fingerprint": run_fingerprint(record),
    }
    model.to(info.device)
    stopper = EarlyStopping(cfg.mode, cfg.patience)
    history: list[dict[str, float]] = []

    ckpt = _resume_point(last_path, cfg.resume, run_config, info)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if extra_state is not None:
            extra_state.load_state_dict(ckpt["extra"])
        stopper.load_state_dict(ckpt["early_stopping"])
        scaler.load_state_dict(ckpt["scaler"])
        history = ckpt["history"]
    elif info.is_main:  # a fresh run must never be mistaken for the continuation of an older one
        last_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)

    cuda = info.device.type == "cuda"
    ddp: DistributedDataParallel | None = None
    if info.world_size > 1:
        ddp = DistributedDataParallel(
            model, device_ids=[info.device.index] if cuda else None, find_unused_parameters=cfg.find_unused_parameters
        )
    train_model: nn.Module = ddp if ddp is not None else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    sampler = EpochSampler(
        train_set,
        samples=cfg.samples_per_epoch,
        num_replicas=info.world_size,
        rank=info.rank,
        seed=cfg.seed,
        rare=rare,
        rare_share=cfg.rare_share,
    )
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size_per_gpu, sampler=sampler, num_workers=cfg.num_workers, pin_memory=cuda
    )
    steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.max_epochs * steps_per_epoch, cfg.warmup, cfg.decay)
    )
    if ckpt is not None:  # after building the schedule, which writes the optimizer's rates: the saved ones win
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    run = _Steps(train_model, ddp, optimizer, scheduler, scaler, step, precision, cfg.accumulate)
    val_loader = (
        DataLoader(
            val_set, batch_size=cfg.batch_size_per_gpu, shuffle=False, num_workers=cfg.num_workers, pin_memory=cuda
        )
        if info.is_main
        else None
    )
    live = _open_live(
        cfg, info, history, {**run_config, "effective_batch_size": effective_batch, "max_epochs": cfg.max_epochs}
    )
    if info.is_main:
        log.info(
            "world size %d x batch %d per process x %d accumulated = effective batch %d; precision %s%s; %s",
            info.world_size,
            cfg.batch_size_per_gpu,
            cfg.accumulate,
            effective_batch,
            precision,
            ", compiled" if cfg.compile else "",
            f"resuming after epoch {len(history)}" if ckpt is not None else "starting afresh",
        )
    if ckpt is not None:
        set_rng_state(ckpt["rng"][info.rank], info.device)
    else:
        seed_everything(cfg.seed + info.rank)

    epoch = len(history)
    while epoch < cfg.max_epochs and not stopper.stopped:
        epoch += 1
        sampler.set_epoch(epoch)
        entry = {**_train_epoch(run, train_loader, epoch, info), "lr": float(optimizer.param_groups[0]["lr"])}
        entry["images"] = epoch * len(sampler) * info.world_size
        if epoch % cfg.val_every == 0 or epoch == cfg.max_epochs:
            metrics = _validate_on_main(validate, model, val_loader, info, cfg.monitor, precision)
            entry.update({f"val/{k}": v for k, v in metrics.items()})
            if stopper.update(metrics[cfg.monitor], epoch) and info.is_main:
                save_atomic(
                    {
                        **(record or {}),
                        "format": FORMAT,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "monitor": cfg.monitor,
                        "score": metrics[cfg.monitor],
                        "metrics": metrics,
                        "extra": extra_state.state_dict() if extra_state is not None else None,
                    },
                    best_path,
                )
        history.append(entry)
        rngs = gather_object(rng_state(info.device), info)
        if info.is_main:
            save_atomic(
                {
                    "format": FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "extra": extra_state.state_dict() if extra_state is not None else None,
                    "rng": rngs,
                    "early_stopping": stopper.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "config": run_config,
                    "effective_batch_size": effective_batch,
                },
                last_path,
            )
            _log_live(live, entry)
            log.info(
                "epoch %d/%d: %s | %s",
                epoch,
                cfg.max_epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "epoch"),
                _progress(stopper, cfg),
            )
    if live is not None:
        live.end()
    barrier(info)
    best = next((h for h in history if h["epoch"] == stopper.best_epoch), {})
    return FitResult(
        epochs_run=len(history),
        best_epoch=stopper.best_epoch,
        best_score=stopper.best_score,
        best_metrics={k[4:]: v for k, v in best.items() if k.startswith("val/")},
        stopped_early=stopper.stopped,
        world_size=info.world_size,
        effective_batch_size=effective_batch,
        history=history,
        last_path=last_path,
        best_path=best_path,
    )


def run_fingerprint(record: Mapping[str, Any] | None) -> str:
    """SHA-256 of the source of every loaded ``plaque`` module and of ``record`` (JSON, keys sorted)."""
    digest = hashlib.sha256()
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] == "plaque" and path:
            digest.update(name.encode() + b"\0" + Path(path).read_bytes())
    digest.update(json.dumps(record or {}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _resume_point(path: Path, resume: bool, run_config: dict[str, Any], info: DistInfo) -> dict[str, Any] | None:
    """``last.pt`` if the run continues from it (rank 0 decides for all), after checking it matches this run."""
    if not broadcast_object(resume and path.is_file(), info):
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT or "config" not in ckpt:
        raise InputError(path, "not a last.pt written by plaque.train.fit")
    if ckpt["config"].get("fingerprint") != run_config["fingerprint"]:
        if info.is_main:
            log.warning("%s was written by other code or settings: starting afresh", path)
        return None
    for key, now in run_config.items():
        was = ckpt["config"].get(key)
        if was != now:
            raise InputError(
                path,
                f"was written with {key}={was!r} but this run has {key}={now!r}; "
                "use the same settings, or resume=False, or another out_dir",
            )
    return ckpt


@dataclass
class _Steps:
    """What one optimizer step needs: the model that runs forward (DDP-wrapped and compiled as asked), the DDP
    wrapper (for ``no_sync``), optimizer, learning-rate schedule, gradient scaler, the caller's step, precision and accumulation."""

    model: nn.Module
    ddp: DistributedDataParallel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: StepFn
    precision: str
    accumulate: int


def _train_epoch(run: _Steps, loader: DataLoader, epoch: int, info: DistInfo) -> dict[str, float]:
    """One pass over this rank's shard, an optimizer step every ``run.accumulate`` micro-batches (and after the
    last one); returns ``{"epoch", "train/<key>": mean over micro-batches and ranks}``.

    Each micro-batch's loss is divided by the size of its group, so a group's gradient is the mean over its
    samples, as one batch of their number would give.
    """
    run.model.train()
    sums: dict[str, float] = {}
    total = len(loader)
    bar = progress(loader, desc=f"epoch {epoch}", disable=not info.is_main, leave=False, dynamic_ncols=True)
    run.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar, start=1):
        first = (i - 1) // run.accumulate * run.accumulate  # micro-batches before this one's group
        group = min(run.accumulate, total - first)
        last = i == first + group
        sync = run.ddp.no_sync() if run.ddp is not None and not last else nullcontext()
        with sync:
            with autocast(info.device, run.precision):
                loss, scalars = run.step(run.model, to_device(batch, info.device), info)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"epoch {epoch}, step {i}/{total}: the loss is {value}; stopping before this update"
                )
            run.scaler.scale(loss / group).backward()
        if last:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        for key, v in {"loss": value, **scalars}.items():
            sums[key] = sums.get(key, 0.0) + float(v.detach() if isinstance(v, Tensor) else v)
        bar.set_postfix(loss=f"{value:.4g}", refresh=False)
    keys = sorted(sums)
    *totals, steps = all_reduce_sum([sums[k] for k in keys] + [float(total)], info)
    return {"epoch": epoch, **{f"train/{k}": t / steps for k, t in zip(keys, totals)}}


def _validate_on_main(
    validate: ValidateFn, model: nn.Module, loader: DataLoader | None, info: DistInfo, monitor: str, precision: str
) -> dict[str, float]:
    """Rank 0 validates the unwrapped model under the training precision; every rank receives its metrics.

    Validation leaves the torch, CUDA, NumPy and Python generators as it found them (a data loader alone draws
    its seed from torch's), so how often a run validates never changes its weights."""
    metrics: dict[str, float] | None = None
    if info.is_main:
        assert loader is not None
        model.eval()
        state = rng_state(info.device)
        try:
            with torch.no_grad(), autocast(info.device, precision):
                metrics = {k: float(v) for k, v in validate(model, loader, info).items()}
        finally:
            set_rng_state(state, info.device)
        if monitor not in metrics:
            raise ValueError(f"validate() returned {sorted(metrics)}, without the monitored {monitor!r}")
    return broadcast_object(metrics, info)


def _progress(stopper: EarlyStopping, cfg: FitConfig) -> str:
    if stopper.best_epoch is None:
        return f"no best {cfg.monitor} yet"
    return (
        f"best {cfg.monitor} {stopper.best_score:.4g} at epoch {stopper.best_epoch}, "
        f"{stopper.bad_validations}/{cfg.patience} validations without improvement"
        + ("; stopping early" if stopper.stopped else "")
    )


def _open_live(cfg: FitConfig, info: DistInfo, history: list[dict[str, float]], params: dict[str, Any]) -> Live | None:
    """DVCLive on rank 0, rebuilt from ``history`` so that it matches ``last.pt`` exactly after a resume."""
    if not info.is_main or cfg.live_dir is None:
        return None
    live = Live(dir=str(cfg.live_dir), dvcyaml=False, save_dvc_exp=False, resume=False)
    live.log_params(params)
    for entry in history:
        _log_live(live, entry)
    return live


def _log_live(live: Live | None, entry: dict[str, float]) -> None:
    if live is None:
        return
    live.step = int(entry["epoch"])
    for key, value in entry.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()
