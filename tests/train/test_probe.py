"""The Stage-1 probe: a linear read-out of the prior, fitted Stage-2's way, scored at pixel level."""

from __future__ import annotations

import numpy as np
import torch

from plaque.classes import CALCIFIED, LUMEN, NONCALCIFIED, NUM_CLASSES, WALL
from plaque.train.probe import encode, fit_probe, probe_scores
from tests.eval.factories import slice_labels


def labels_and_latents(n: int, seed: int, informative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices (n, 16, 16) of the eval factory's vessel drawings and latents (n, 8, 8, 8) at half resolution:
    one-hot class codes of the nearest pixel plus noise, or noise alone."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(np.stack([slice_labels(rng, True) for _ in range(n)]).astype(np.int64))
    noise = torch.from_numpy(rng.normal(0, 0.3, (n, 8, 8, 8)).astype(np.float32))
    if not informative:
        return labels, noise
    codes = torch.nn.functional.one_hot(labels[:, ::2, ::2], 8).permute(0, 3, 1, 2).float()
    return labels, codes * 3 + noise


def test_a_prior_that_holds_the_classes_scores_high_and_noise_scores_low() -> None:
    labels, latents = labels_and_latents(64, 0, informative=True)
    probe = fit_probe(latents, labels, steps=150)
    val_labels, val_latents = labels_and_latents(32, 1, informative=True)
    per_class, macro = probe_scores(probe, val_latents, val_labels)
    assert set(per_class) == {WALL, LUMEN, CALCIFIED, NONCALCIFIED}
    assert min(per_class.values()) > 0.6 and macro > 0.65  # half-resolution codes bound it below 1
    noise_labels, noise = labels_and_latents(64, 0, informative=False)
    _, noise_macro = probe_scores(fit_probe(noise, noise_labels, steps=150), *labels_and_latents(32, 1, False)[::-1])
    assert noise_macro < macro - 0.3


def test_the_fit_is_seeded_and_leaves_the_callers_random_stream_alone() -> None:
    labels, latents = labels_and_latents(16, 2, informative=True)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = fit_probe(latents, labels, steps=20)
    assert torch.equal(torch.rand(3), expected)
    b = fit_probe(latents, labels, steps=20)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.weight.shape == (NUM_CLASSES, 8, 1, 1)


def test_encode_batches_and_keeps_order() -> None:
    images = np.random.default_rng(0).random((600, 4, 4)).astype(np.float32)
    out = encode(lambda x: x * 2, images, torch.device("cpu"))
    assert out.shape == (600, 1, 4, 4) and torch.allclose(out[:, 0], torch.from_numpy(images) * 2)


def test_the_probe_runs_in_float32_under_a_bf16_autocast() -> None:
    """The trainer validates under the training precision; the probe's fit must not inherit bf16."""
    labels, latents = labels_and_latents(64, 0, informative=True)
    val_labels, val_latents = labels_and_latents(32, 1, informative=True)
    plain = probe_scores(fit_probe(latents, labels, steps=150), val_latents, val_labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probe = fit_probe(latents, labels, steps=150)
        under_bf16 = probe_scores(probe, val_latents, val_labels)
    assert probe.weight.dtype == torch.float32 and under_bf16 == plain
