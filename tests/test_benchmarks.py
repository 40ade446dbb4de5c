"""The benchmark harness on tiny settings: step timing and ratios, FAA scaling, SAM's attention against the
fused one, targets, the CLI's JSON, and the pipeline order `repro_times` reads from dvc.yaml (without running dvc)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.__main__ import TARGETS, Target, main
from benchmarks.centerline_offset import DENSE_MM, DIRECTIONS, offset_centerline
from benchmarks.centerline_offset import main as centerline_offset_main
from benchmarks.common import ensure_processed
from benchmarks.faa_scaling import ExplicitFAA, faa_scaling, grids_up_to
from benchmarks.flops import count_flops, executed_flops, mfu, peak_tflops, sam_reference_attention
from benchmarks.levers import lever_row, lever_table
from benchmarks.loader import loader_throughput
from benchmarks.no_centerline import MIN_PLAQUE_MM3, plaque_per_vessel, relative_apart
from benchmarks.repro_times import stage_order
from benchmarks.sam_attention import Case, cases, measure
from benchmarks.steps import (
    Levers,
    Memory,
    MethodFigures,
    benchmark_steps,
    build_run,
    random_batch,
    ratio_pairs,
    ratios,
    train_step,
)
from benchmarks.unet_anchor import main as unet_anchor_main
from benchmarks.unet_anchor import train_and_score
from plaque import precision as precision_module
from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED
from plaque.config import load_config
from plaque.data.dataset import SliceDataset
from plaque.data.slicing import transport_frames
from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.patient import Patient
from plaque.methods import stage2_methods
from plaque.models.attention import set_attention_kernel
from plaque.models.faa import FAA
from plaque.models.sam import build_image_encoder
from plaque.train.distributed import DistInfo
from tests.checkpoints import untrained_checkpoint
from tests.models.test_attention import plain_sam_encoder

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tests check the figures' consistency, not speed, and stay quick on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float32_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's automatic precision is float32, as on a CPU without native bf16."""
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)


def test_step_benchmark_times_every_method_and_its_ratio() -> None:
    cfg = load_config(profile="smoke")
    report = benchmark_steps(cfg, stage2_methods(), CPU, 2, warmup=1, steps=2, memory=False, peak=0.1)
    assert list(report.methods) == stage2_methods()
    for f in report.methods.values():
        assert f.train_step_s > 0 and f.infer_step_s > 0 and f.memory is None
        assert f.train_images_per_s == pytest.approx(2 / f.train_step_s)
        assert f.infer_slices_per_s == pytest.approx(2 / f.infer_step_s)
        assert f.train_flops > 2 * f.infer_flops > 0  # backward costs about twice the forward it follows
        assert f.train_mfu == pytest.approx(f.train_flops / f.train_step_s / 0.1e12)
        # the folded attention kernel multiplies more than SAM's architecture needs (the prior alone: equal)
        assert f.train_flops_executed > f.train_flops and f.infer_flops_executed > f.infer_flops
    # FLOPs follow the architecture: the prior and FAA add to ours what no_prior lacks
    assert report.methods["ours"].infer_flops > report.methods["no_prior"].infer_flops
    ours, no_prior = report.methods["ours"], report.methods["no_prior"]
    assert report.ratios["ours/no_prior"] == pytest.approx(
        {
            "train_step": ours.train_step_s / no_prior.train_step_s,
            "infer_step": ours.infer_step_s / no_prior.infer_step_s,
        }
    )
    assert set(report.ratios) == {f"{a}/{b}" for a, b in ratio_pairs(stage2_methods())}


def test_fused_adamw_takes_the_step_the_default_adamw_takes() -> None:
    cfg = load_config(profile="smoke")
    batch = random_batch(cfg["preprocess"]["size"], 2)
    runs = [build_run(cfg, "ours", CPU, Levers(adamw=adamw)) for adamw in ("default", "fused")]
    assert [r.optimizer.defaults["fused"] for r in runs] == [None, True]
    for run in runs:
        torch.manual_seed(0)  # the same dropout masks
        train_step(run, batch, DistInfo(device=CPU))
    for (name, a), (_, b) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_compile_lever_times_the_compiled_model_and_counts_the_eager_one(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []

    def fake_compile(model: torch.nn.Module, mode: str) -> torch.nn.Module:
        compiled.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = load_config(profile="smoke")
    eager = benchmark_steps(cfg, ["ours", "sam_lora"], CPU, 2, warmup=0, steps=1, memory=False)
    assert compiled == []
    report = benchmark_steps(
        cfg, ["ours", "sam_lora"], CPU, 2, warmup=0, steps=1, memory=False, levers=Levers(compile="reduce-overhead")
    )
    assert compiled == ["reduce-overhead", "reduce-overhead"]
    assert report.levers == Levers(compile="reduce-overhead") and eager.levers == Levers()
    for m in ("ours", "sam_lora"):  # FLOPs are the architecture's, whatever runs them
        assert report.methods[m].train_flops == eager.methods[m].train_flops


def test_lever_table_shows_each_run_and_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    paths = []
    for name, levers in (("baseline", Levers()), ("unfused", Levers(adamw="default"))):
        report = benchmark_steps(cfg, ["ours"], CPU, 2, warmup=0, steps=1, memory=False, levers=levers)
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"steps": dataclasses.asdict(report)}))
    rows = lever_table(paths, "ours").splitlines()[2:]
    assert [r.split()[:5] for r in rows] == [
        ["baseline", "2", "folded", "fused", "eager"],
        ["unfused", "2", "folded", "default", "eager"],
    ]
    with pytest.raises(InputError, match="no figures for method 'cat_sam'") as e:
        lever_row(paths[0], "cat_sam")
    assert e.value.where == str(paths[0])
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"steps": {"methods": {}}}))
    with pytest.raises(InputError, match="records its levers"):
        lever_row(old, "ours")


def test_every_method_is_compared_with_sam_lora_once_it_exists() -> None:
    assert ratio_pairs(["ours", "ours_additive", "no_prior"]) == [("ours", "no_prior")]
    assert ratio_pairs(["no_prior", "sam_lora", "ours"]) == [
        ("ours", "no_prior"),
        ("no_prior", "sam_lora"),
        ("ours", "sam_lora"),
    ]
    figures = {
        m: MethodFigures(m, 4, t, 4 / t, t / 2, 8 / t, Memory("peak_rss", peak, 0), 0, 0, 0, 0, 0.0, 0.0, None, None)
        for m, t, peak in (("ours", 3.0, 600), ("sam_lora", 2.0, 400))
    }
    assert ratios(figures) == {"ours/sam_lora": {"train_step": 1.5, "infer_step": 1.5, "peak_memory": 1.5}}


def test_explicit_attention_computes_what_the_fused_block_does() -> None:
    torch.manual_seed(0)
    fused = FAA(32, heads=4).eval()
    explicit = ExplicitFAA(32, heads=4).eval()
    explicit.load_state_dict(fused.state_dict())
    f_sam, f_vq = torch.randn(2, 9, 32), torch.randn(2, 5, 32)
    torch.testing.assert_close(explicit(f_sam, f_vq), fused(f_sam, f_vq), atol=1e-5, rtol=1e-5)


def test_faa_scaling_memory_of_the_fused_path_grows_linearly(float32_cpu: None) -> None:
    # in float32: under bf16 autocast the weights' bf16 copies are saved too, a fixed cost that hides the
    # growth at these tiny grids
    report = faa_scaling([4, 8], CPU, warmup=1, steps=2, isolate=False)
    assert [(p.impl, p.grid, p.tokens) for p in report.points] == [
        ("sdpa", 4, 16),
        ("explicit", 4, 16),
        ("sdpa", 8, 64),
        ("explicit", 8, 64),
    ]
    assert all(p.fwd_bwd_s > 0 and p.saved_bytes > 0 for p in report.points)
    sdpa, explicit = report.growth["sdpa"], report.growth["explicit"]
    assert sdpa["tokens"] == explicit["tokens"] == 4
    assert sdpa["saved_for_backward"] == pytest.approx(4, rel=0.05)
    assert explicit["saved_for_backward"] > sdpa["saved_for_backward"]


def test_faa_grids() -> None:
    assert grids_up_to(64) == [16, 32, 48, 64]
    assert grids_up_to(40) == [16, 32]
    assert grids_up_to(8) == [8]
    with pytest.raises(ValueError):
        grids_up_to(0)


def test_sam_attention_cases_follow_the_image() -> None:
    assert [(c.name, c.side, c.count) for c in cases(8, 64)] == [
        ("vit_b global", 64, 8),
        ("vit_b window", 14, 200),
        ("vit_h global", 64, 8),
    ]  # 25 padded windows an image


def test_sam_attention_compares_both_implementations_on_one_function(float32_cpu: None) -> None:
    figures = measure(Case("small", 64, 2, 6, 2), CPU, steps=1)
    assert [(f.impl, f.flash) for f in figures] == [("sam", None), ("sdpa", True)]
    assert all(f.fwd_bwd_ms > 0 and f.peak_bytes is None and f.error < 1e-5 for f in figures)  # float32 on the CPU


def test_loader_headroom_is_its_rate_over_the_step_consumption(tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    data = ensure_processed(tmp_path / "missing", cfg, tmp_path)
    figures = loader_throughput(data, cfg, 4, CPU, consumption_images_per_s=10.0)
    assert figures.images == len(SliceDataset(data, "train")) and figures.num_workers == cfg["train"]["num_workers"]
    assert figures.images_per_s == pytest.approx(figures.images / figures.seconds)
    assert figures.headroom == pytest.approx(figures.images_per_s / 10.0)
    assert loader_throughput(data, cfg, 4, CPU, consumption_images_per_s=None).headroom is None


def test_targets_apply_to_their_setting_only() -> None:
    overhead = TARGETS["overhead"]
    assert overhead.judge(0.10, "demo", CPU)["verdict"] == "ok"
    assert overhead.judge(0.20, "demo", CPU)["verdict"] == "OVER"
    elsewhere = overhead.judge(0.20, "smoke", CPU)
    assert not elsewhere["applies"] and elsewhere["verdict"] == "n/a"
    floor = Target("headroom", 5.0, ceiling=False, unit="×")
    assert floor.judge(4.9, "paper", CPU)["verdict"] == "UNDER"
    assert floor.judge(None, "paper", CPU)["verdict"] == "n/a"


def test_cli_writes_every_part_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "--device",
                "cpu",
                "--profile",
                "smoke",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--batch-size",
                "2",
                "--threads",
                "1",
                "--methods",
                "ours,no_prior",
                "--skip-loader",
                "--faa-max-grid",
                "8",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ours/no_prior" in printed and "explicit" in printed and "targets" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "profile", "stage2", "settings", "steps", "loader", "faa", "repro", "targets"}
    assert data["profile"] == "smoke" and data["loader"] is None and data["repro"] is None
    assert data["settings"]["methods"] == ["ours", "no_prior"] and data["settings"]["batch_size"] == 2
    assert {"date", "cpu", "cpu_cores", "torch", "gpu"} <= set(data["machine"])
    methods = data["steps"]["methods"]
    assert list(methods) == ["ours", "no_prior"]
    for figures in methods.values():
        memory = figures["memory"]
        assert memory["kind"] == "peak_rss" and memory["peak_bytes"] >= memory["base_bytes"] > 0
    ratio = data["steps"]["ratios"]["ours/no_prior"]["train_step"]
    assert ratio == pytest.approx(methods["ours"]["train_step_s"] / methods["no_prior"]["train_step_s"])
    assert [(p["impl"], p["tokens"]) for p in data["faa"]["points"]] == [("sdpa", 64), ("explicit", 64)]
    verdicts = {key: t["verdict"] for key, t in data["targets"].items()}
    assert verdicts == {key: "n/a" for key in TARGETS}  # smoke on the CPU: no target applies


def test_cli_rejects_an_unknown_method() -> None:
    with pytest.raises(SystemExit, match="nonsense"):
        main(["--device", "cpu", "--profile", "smoke", "--methods", "ours,nonsense"])


def test_repro_stages_follow_the_pipeline() -> None:
    order = stage_order(ROOT / "dvc.yaml")
    assert order[:2] == ["phantom", "preprocess"] and order[-1] == "evaluate"
    assert max(order.index(s) for s in order if s.startswith("stage1-")) < min(
        order.index(s) for s in order if s.startswith("stage2-")
    )


def test_repro_order_comes_from_dependencies_not_file_order(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  report: {cmd: r, deps: [results/eval/summary.json], outs: [report.md]}\n"
        "  evaluate: {cmd: e, deps: [models], metrics: [results/eval]}\n"
        "  train: {cmd: t, deps: [data/processed], outs: [{models/best.pt: {cache: false}}]}\n"
        "  data: {cmd: d, outs: [data]}\n"
    )
    assert stage_order(tmp_path / "dvc.yaml") == ["data", "train", "evaluate", "report"]
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a: {cmd: a, deps: [x], outs: [y]}\n  b: {cmd: b, deps: [y], outs: [x]}\n"
    )
    with pytest.raises(ValueError, match="depend on each other"):
        stage_order(tmp_path / "dvc.yaml")


def test_flops_are_counted_and_peaks_looked_up() -> None:
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64)
    assert count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32  # 2 FLOPs per multiply-add
    q, k, v = (torch.randn(2, 3, 50, 16, requires_grad=True) for _ in range(3))
    forward = 2 * 2 * (2 * 3 * 50 * 50 * 16)  # q @ k^T and weights @ v, 2 FLOPs per multiply-add
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)) == forward
    assert (
        count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()) == 3.5 * forward
    )  # backward: 5 products
    assert peak_tflops(CPU, "fp32") is None and peak_tflops(CPU, "fp32", 1.5) == 1.5
    assert mfu(10**12, 2.0, 1.0) == pytest.approx(0.5) and mfu(1, 1.0, None) is None


def test_the_reference_count_is_sams_own_encoder_and_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    encoder = build_image_encoder("vit_tiny", input_size=64, patch_size=4)
    plain = plain_sam_encoder("vit_tiny", input_size=64, patch_size=4)
    plain.load_state_dict(encoder.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        sams = count_flops(lambda: plain(images))
        executed = count_flops(lambda: encoder(images))
        with sam_reference_attention(encoder):
            reference = count_flops(lambda: encoder(images))
            torch.testing.assert_close(encoder(images), plain(images), rtol=0, atol=1e-5)
        assert all("forward" not in vars(block.attn) for block in encoder.blocks)
        set_attention_kernel(encoder, "flex")
        assert executed_flops(lambda: encoder(images)) is None  # the counter cannot trace flex on the CPU
    assert reference == sams and executed > reference


def test_an_offset_centerline_lies_the_offset_away_across_the_vessel() -> None:
    t = np.linspace(0.0, np.pi, 200)
    line = np.stack([20 * np.cos(t), 20 * np.sin(t), 5 * t], axis=1)  # a helix turn, about 65 mm
    dense = offset_centerline(line, 0.0, "+u")
    tangent, _, _ = transport_frames(dense, DENSE_MM)  # the normals of the cross-sections cut along it
    for direction in DIRECTIONS:
        moved = offset_centerline(line, 0.7, direction)
        step = moved - dense
        assert np.allclose(np.linalg.norm(step, axis=1), 0.7), direction
        assert np.abs((step * tangent).sum(axis=1)).max() < 1e-6, "across the vessel, not along it"
    assert np.allclose(offset_centerline(line, 0.7, "+u") - dense, dense - offset_centerline(line, 0.7, "-u"))
    plus_u, plus_v = offset_centerline(line, 0.7, "+u") - dense, offset_centerline(line, 0.7, "+v") - dense
    assert np.abs((plus_u * plus_v).sum(axis=1)).max() < 1e-6, "u and v are the cross-section's two axes"


def test_centerline_offset_scores_every_offset_in_every_direction(tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    settings = {k: cfg["preprocess"][k] for k in ("window_hu", "crop_px", "size")} | {"step_mm": 2.0}
    checkpoint = untrained_checkpoint(cfg, "no_prior", settings, tmp_path / "best.pt")
    out = tmp_path / "offset.json"
    argv = ["--checkpoint", str(checkpoint), "--profile", "smoke", "--patients", "1", "--offsets", "0,0.5"]
    assert centerline_offset_main([*argv, "--threads", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [r["offset_mm"] for r in figures["summary"]] == [0.0, 0.5]
    assert sorted((r["offset_mm"], r["direction"]) for r in figures["rows"]) == [
        (0.0, "+u"),
        *sorted((0.5, d) for d in DIRECTIONS),
    ]
    rows = pd.DataFrame(figures["rows"])
    assert (rows["false_calcified_mm3"] >= 0).all() and rows["lumen"].between(0.0, 1.0).all()
    expected = rows.drop(columns="direction").groupby(["offset_mm", "patient"]).mean().groupby("offset_mm").mean()
    for summary in figures["summary"]:
        assert summary["lumen"] == pytest.approx(expected.loc[summary["offset_mm"], "lumen"])
    with pytest.raises(SystemExit):
        centerline_offset_main([*argv[:-2], "--offsets", "0,-0.5"])


def test_plaque_counts_for_the_vessel_whose_true_centerline_passes_nearest() -> None:
    geometry = Geometry.axial((10, 20, 20), np.zeros(3), (1.0, 0.5, 0.5))  # voxels of 0.25 mm³
    z = np.stack([np.zeros(10), np.zeros(10), np.arange(10.0)], axis=1)
    lines = {"A": z + [2.0, 2.0, 0.0], "B": z + [8.0, 8.0, 0.0], "C": z + [9.5, 0.0, 0.0]}
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[0:3, 4, 4] = CALCIFIED  # x = y = 2 mm: on A
    labels[5, 16, 15] = NONCALCIFIED  # x = 7.5, y = 8 mm: beside B
    labels[5, 4, 5] = LUMEN  # not plaque
    patient = Patient(Path("p"), "p", np.zeros(geometry.shape, np.float32), labels, geometry, lines)
    assert plaque_per_vessel(labels, patient) == {"A": 0.75, "B": 0.25, "C": 0.0}
    assert plaque_per_vessel(np.zeros_like(labels), patient) == {"A": 0.0, "B": 0.0, "C": 0.0}


def test_relative_apart_scores_only_vessels_with_plaque() -> None:
    given = pd.Series([20.0, 4.0, 0.5 * MIN_PLAQUE_MM3, 0.0])
    apart = relative_apart(pd.Series([15.0, 6.0, 3.0, 2.0]), given)
    np.testing.assert_allclose(apart[:2], [0.25, 0.5])
    assert apart[2:].isna().all()  # too little plaque along the true centerline to take a share of


def test_unet_anchor_scores_each_stop_and_repeats_with_its_seed(tmp_path: Path) -> None:
    cfg = load_config(profile="smoke")
    data = ensure_processed(tmp_path / "missing", cfg, tmp_path)
    first = train_and_score(data, [1, 3], None, 0, cfg)
    assert [(r["steps"], r["images"]) for r in first] == [(1, 32), (3, 96)]
    again = train_and_score(data, [3], None, 0, cfg)
    assert again[0]["dice"] == first[1]["dice"] and again[0]["macro_dice"] == first[1]["macro_dice"]
    out = tmp_path / "anchor.json"
    assert (
        unet_anchor_main(["--data", str(data), "--steps", "2", "--profile", "smoke", "--augment", "--json", str(out)])
        == 0
    )
    written = json.loads(out.read_text())
    assert written["augment"] == cfg["augment"] and [r["steps"] for r in written["results"]] == [2]
    assert set(written["results"][0]["dice"]) == {"vessel_wall", "lumen", "calcified", "non_calcified"}
