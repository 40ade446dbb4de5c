"""The training loop on one CPU process: learning, model selection, early stopping, errors, kill-and-resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from plaque.checkpoint import load_checkpoint
from plaque.config import load_config
from plaque.errors import InputError
from plaque.train.distributed import DistInfo
from plaque.train.trainer import EpochSampler, FitConfig, fit, run_fingerprint, seed_everything
from tests.train.toy import Scripted, ToyData, build, make_step, toy_config, toy_validate

ROOT = Path(__file__).resolve().parents[2]
CPU = DistInfo()


def _cfg(tmp_path: Path, **kw: Any) -> FitConfig:
    return toy_config(tmp_path / "ckpt", **kw)


def _fit(cfg: FitConfig, validate=toy_validate, step=None, **kw: Any):
    seed_everything(0)
    model, optimizer, tracker = build()
    result = fit(
        model,
        optimizer,
        ToyData(48, 1, augment=True),
        ToyData(16, 2),
        step or make_step(tracker),
        validate,
        cfg,
        CPU,
        extra_state=tracker,
        **kw,
    )
    return result, model


def test_training_lowers_the_loss_and_keeps_the_best_validation(tmp_path):
    cfg = _cfg(tmp_path, live_dir=tmp_path / "live")
    result, model = _fit(cfg)
    losses = [h["train/loss"] for h in result.history]
    assert losses[-1] < 0.25 * losses[0]
    mse = {h["epoch"]: h["val/mse"] for h in result.history}
    assert len(mse) == 8 and result.epochs_run == 8 and not result.stopped_early
    assert result.best_epoch == min(mse, key=mse.get) and result.best_score == min(mse.values())
    assert result.best_metrics == {"mse": result.best_score}
    assert (result.world_size, result.effective_batch_size) == (1, 8)

    best = load_checkpoint(cfg.out_dir / "best.pt")
    assert (best["epoch"], best["score"], best["monitor"]) == (result.best_epoch, result.best_score, "mse")
    assert set(best["extra"]) == {"total", "count"}
    model.load_state_dict(best["model"])
    val_loader = torch.utils.data.DataLoader(ToyData(16, 2), batch_size=8)
    assert toy_validate(model.eval(), val_loader, CPU)["mse"] == result.best_score

    last = load_checkpoint(cfg.out_dir / "last.pt")
    assert last["epoch"] == 8 and last["history"] == result.history
    assert set(last) >= {"model", "optimizer", "scheduler", "extra", "rng", "early_stopping", "config"}
    rows = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert rows[0] == "step\tloss" and [r.split("\t")[0] for r in rows[1:]] == [str(e) for e in range(1, 9)]
    assert sorted(p.name for p in cfg.out_dir.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize(
    "mode, scores, best",
    [
        ("max", [0.1, 0.3, 0.2, 0.25, 0.3, 0.9], (2, 0.3)),  # a tie is no improvement
        ("min", [1.0, 0.5, 0.6, 0.5, 0.7, 0.1], (2, 0.5)),
        ("max", [0.1, float("nan"), 0.05, 0.08, 0.09], (1, 0.1)),  # NaN never improves
    ],
)
def test_early_stopping_after_patience_validations(tmp_path, mode, scores, best):
    validate = Scripted(scores)
    result, _ = _fit(_cfg(tmp_path, max_epochs=40, val_every=2, patience=3, monitor="score", mode=mode), validate)
    assert validate.calls == best[0] + 3
    assert result.stopped_early and result.epochs_run == 2 * (best[0] + 3)
    assert (result.best_epoch, result.best_score) == (2 * best[0], best[1])
    assert [h["epoch"] for h in result.history if "val/score" in h] == list(range(2, 2 * (best[0] + 3) + 1, 2))
    assert load_checkpoint(tmp_path / "ckpt" / "best.pt")["epoch"] == 2 * best[0]


def test_validates_at_the_last_epoch(tmp_path):
    validate = Scripted([0.1, 0.2, 0.3])
    result, _ = _fit(_cfg(tmp_path, max_epochs=5, val_every=2, monitor="score", mode="max"), validate)
    assert [h["epoch"] for h in result.history if "val/score" in h] == [2, 4, 5]
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (5, 5, False)


def test_how_often_a_run_validates_leaves_its_weights_unchanged(tmp_path):
    """The toy trains with dropout (torch) and jitter (NumPy, Python); its validation's data loader draws a seed
    from torch's generator, and this validation draws from all three besides."""

    def drawing_validate(model: nn.Module, loader: Any, info: DistInfo) -> dict[str, float]:
        torch.rand(3), np.random.rand(), random.random()
        return toy_validate(model, loader, info)

    weights = []
    for every in (1, 3):
        _, model = _fit(_cfg(tmp_path / f"every{every}", max_epochs=3, val_every=every), drawing_validate)
        weights.append(model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_finished_run_resumes_as_a_no_op_and_refuses_other_settings(tmp_path):
    cfg = _cfg(tmp_path, max_epochs=10, val_every=1, patience=2, monitor="score", mode="max")
    first, _ = _fit(cfg, Scripted([0.5, 0.4, 0.4]))
    assert first.stopped_early and first.epochs_run == 3
    validate, step = Scripted([1.0]), make_step()
    again, _ = _fit(cfg, validate, step)
    assert validate.calls == 0 and step.calls["n"] == 0
    assert (again.history, again.best_epoch, again.stopped_early) == (first.history, 1, True)
    with pytest.raises(InputError, match="seed=0 but this run has seed=1"):
        _fit(_cfg(tmp_path, max_epochs=10, patience=2, monitor="score", mode="max", seed=1), validate)


def test_a_last_pt_of_other_settings_or_code_starts_afresh(tmp_path, caplog, monkeypatch):
    """What DVC's ``persist`` relies on: only a run of the same record (configuration) and code resumes."""
    cfg = _cfg(tmp_path, max_epochs=3, monitor="score", mode="max")
    first, _ = _fit(cfg, Scripted([0.5, 0.6, 0.7]), record={"lr": 1e-4})
    assert first.epochs_run == 3
    step = make_step()
    again, _ = _fit(cfg, Scripted([0.1, 0.2, 0.3]), step, record={"lr": 1e-4})  # same: a finished run, no step
    assert step.calls["n"] == 0 and again.best_score == 0.7
    with caplog.at_level("WARNING", logger="plaque.train.trainer"):
        other, _ = _fit(cfg, Scripted([0.1, 0.2, 0.3]), step, record={"lr": 2e-4})
    assert "written by other code or settings: starting afresh" in caplog.text
    assert step.calls["n"] > 0 and other.best_score == 0.3 and other.epochs_run == 3
    fingerprint = run_fingerprint({"lr": 2e-4})
    assert load_checkpoint(cfg.out_dir / "last.pt")["config"]["fingerprint"] == fingerprint
    probe = tmp_path / "probe.py"  # the code is part of it: the source of any loaded plaque module
    probe.write_text("x = 1\n")
    monkeypatch.setitem(sys.modules, "plaque._probe", types.SimpleNamespace(__file__=str(probe)))
    fingerprint = run_fingerprint({"lr": 2e-4})
    probe.write_text("x = 2\n")
    assert run_fingerprint({"lr": 2e-4}) != fingerprint
    fresh = _cfg(tmp_path, max_epochs=2, monitor="score", mode="max", resume=False)
    with pytest.raises(FloatingPointError):
        _fit(fresh, Scripted([0.1]), make_step(nan_at=1))
    assert not any((tmp_path / "ckpt").iterdir())  # the old run's checkpoints are gone
    result, _ = _fit(fresh, Scripted([0.1, 0.2]))
    assert result.epochs_run == 2 and result.best_epoch == 2


def test_config_from_params(tmp_path):
    cfg = FitConfig.from_params(load_config(profile="smoke")["train"], monitor="dice", mode="max", out_dir=tmp_path)
    assert (cfg.max_epochs, cfg.val_every, cfg.patience, cfg.batch_size_per_gpu) == (2, 1, 6, 8)
    with pytest.raises(InputError, match="'max' or 'min'"):
        FitConfig.from_params(load_config()["train"], monitor="dice", mode="up", out_dir=tmp_path)


def test_epoch_sampler_draws_a_fresh_subset_each_epoch_split_across_ranks():
    data = list(range(50))
    full = EpochSampler(data, samples="all", num_replicas=1, rank=0, seed=3)
    reference = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    full.set_epoch(2), reference.set_epoch(2)
    assert list(full) == list(reference), "'all' is DistributedSampler itself"

    def drawn(epoch: int, replicas: int) -> list[list[int]]:
        ranks = [EpochSampler(data, samples=17, num_replicas=replicas, rank=r, seed=3) for r in range(replicas)]
        for s in ranks:
            s.set_epoch(epoch)
        return [list(s) for s in ranks]

    (one,) = drawn(1, 1)
    assert len(one) == 17 == len(set(one)), "17 distinct items"
    assert drawn(1, 1) == [one], "a function of (seed, epoch)"
    assert set(drawn(2, 1)[0]) != set(one), "another epoch, another subset"
    two = drawn(1, 2)
    assert [len(r) for r in two] == [9, 9] and set(two[0]) | set(two[1]) == set(one), "ranks share one draw"
    assert len(set(two[0]) & set(two[1])) == 1, "padded by one repeat to a multiple of the world size"
    big = EpochSampler(data, samples=500, num_replicas=1, rank=0, seed=3)
    assert sorted(big) == data, "never more than the dataset"


def test_epoch_sampler_draws_the_rare_share_from_the_rare_items():
    data = list(range(100))
    rare = [i % 10 == 0 for i in data]  # 10 % rare
    sampler = EpochSampler(data, samples=40, num_replicas=1, rank=0, seed=1, rare=rare, rare_share=0.5)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == 40 and sum(rare[i] for i in drawn) == 20, "half of the draw is rare"
        assert len(set(i for i in drawn if not rare[i])) == 20, "the others are distinct"
    many = EpochSampler(data, samples=60, num_replicas=1, rank=0, seed=1, rare=rare, rare_share=0.5)
    many.set_epoch(1)
    drawn = list(many)
    assert sum(rare[i] for i in drawn) == 30 and {i for i in drawn if rare[i]} == set(range(0, 100, 10)), (
        "more rare draws than rare items: with replacement, every rare item used"
    )
    common = EpochSampler(data, samples=40, num_replicas=1, rank=0, seed=1, rare=rare, rare_share=0.05)
    plain = EpochSampler(data, samples=40, num_replicas=1, rank=0, seed=1)
    common.set_epoch(1), plain.set_epoch(1)
    assert list(common) == list(plain), "rare items already frequent enough: the plain draw"
    full = EpochSampler(data, samples="all", num_replicas=1, rank=0, seed=1, rare=rare, rare_share=0.5)
    full.set_epoch(1)
    assert sorted(full) == data, "a full pass ignores the rare share"
    with pytest.raises(ValueError, match="rare marks 3 items"):
        EpochSampler(data, samples=40, num_replicas=1, rank=0, seed=1, rare=[True] * 3, rare_share=0.5)


def test_samples_per_epoch_sets_the_steps_of_an_epoch(tmp_path):
    step = make_step()
    _fit(_cfg(tmp_path, max_epochs=2, samples_per_epoch=16), step=step)
    assert step.calls["n"] == 4  # 16 of the 48 items a epoch, batch 8, 2 epochs
    with pytest.raises(InputError, match="samples_per_epoch"):
        _cfg(tmp_path, samples_per_epoch=0)


def test_non_finite_loss_stops_naming_epoch_and_step(tmp_path):
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 3/6: the loss is nan"):
        _fit(_cfg(tmp_path), step=make_step(nan_at=6 + 3))
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 1


def test_validate_must_return_the_monitored_metric(tmp_path):
    with pytest.raises(ValueError, match="without the monitored 'dice'"):
        _fit(_cfg(tmp_path, monitor="dice", mode="max"))


def _toy(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.train.toy", "--out", str(out), "--report", str(out / "report"), *args]


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{n}]")
    else:
        assert a == b, where


def test_killed_and_restarted_run_equals_an_uninterrupted_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ("--max-epochs", "7", "--val-every", "2")
    subprocess.run(_toy(tmp_path / "a", *args), cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)

    b = tmp_path / "b"
    proc = subprocess.Popen(
        _toy(b, *args, "--step-sleep", "0.04"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not ((b / "ckpt" / "last.pt").is_file() and load_checkpoint(b / "ckpt" / "last.pt")["epoch"] >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        time.sleep(0.1)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    killed_at = load_checkpoint(b / "ckpt" / "last.pt")["epoch"]
    assert 2 <= killed_at < 7
    subprocess.run(_toy(b, *args), cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)

    for name in ("last.pt", "best.pt"):
        _assert_same(load_checkpoint(tmp_path / "a" / "ckpt" / name), load_checkpoint(b / "ckpt" / name), name)
    plots = tmp_path / "a" / "live" / "plots" / "metrics"
    for tsv in sorted(plots.rglob("*.tsv")):
        assert tsv.read_text() == (b / "live" / "plots" / "metrics" / tsv.relative_to(plots)).read_text(), tsv
    assert (tmp_path / "a" / "report" / "result-rank0.json").read_text() == (
        b / "report" / "result-rank0.json"
    ).read_text()


def _linear_fit(tmp_path: Path, name: str, **cfg_kw: Any) -> tuple[nn.Module, Any]:
    """A linear model fitted on 16 samples (no dropout, no augmentation: every update is the gradient)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    net = torch.nn.Sequential(model, torch.nn.Flatten(0))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    cfg = _cfg(tmp_path / name, **{"max_epochs": 1, **cfg_kw})
    result = fit(net, optimizer, ToyData(16, 1), ToyData(8, 2), make_step(), toy_validate, cfg, CPU)
    return model, result


def test_two_accumulated_half_batches_make_the_update_of_one_full_batch(tmp_path):
    full, full_result = _linear_fit(tmp_path, "full", batch_size_per_gpu=8)
    halves, half_result = _linear_fit(tmp_path, "halves", batch_size_per_gpu=4, accumulate=2)
    torch.testing.assert_close(halves.weight, full.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(halves.bias, full.bias, rtol=1e-6, atol=1e-7)
    single, _ = _linear_fit(tmp_path, "single", batch_size_per_gpu=4)  # the same micro-batches, a step each
    assert not torch.allclose(single.weight, full.weight)
    assert full_result.effective_batch_size == half_result.effective_batch_size == 8
    assert load_checkpoint(tmp_path / "halves" / "ckpt" / "last.pt")["config"]["accumulate"] == 2


def test_fp16_steps_go_through_a_gradient_scaler_that_skips_overflows(tmp_path):
    """The V100 path, as far as the CPU runs it: fp16 autocast, the loss scaled before backward, a step whose
    gradients overflow skipped and the scale halved; the scaler's state is checkpointed."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    net = torch.nn.Sequential(model, torch.nn.Flatten(0))
    before = model.weight.detach().clone()
    overflow = model.weight.register_hook(lambda g: torch.full_like(g, float("inf")))  # every step overflows
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    cfg = _cfg(tmp_path, max_epochs=1, precision="fp16")
    fit(net, optimizer, ToyData(16, 1), ToyData(8, 2), make_step(), toy_validate, cfg, CPU)
    overflow.remove()
    assert torch.equal(model.weight, before)  # both steps skipped
    scaler = load_checkpoint(cfg.out_dir / "last.pt")["scaler"]
    assert scaler["scale"] == 2.0**16 / 4  # halved at each of the two overflowing steps
    assert load_checkpoint(cfg.out_dir / "last.pt")["config"]["precision"] == "fp16"
    _, result = _linear_fit(tmp_path, "fp16", precision="fp16")  # without overflows, it trains
    assert result.history[-1]["train/loss"] < 30


@pytest.mark.slow
def test_compiled_training_gives_the_losses_of_eager_training(tmp_path):
    _, eager = _linear_fit(tmp_path, "eager", max_epochs=2)
    _, compiled = _linear_fit(tmp_path, "compiled", max_epochs=2, compile=True)
    for a, b in zip(eager.history, compiled.history):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5)
