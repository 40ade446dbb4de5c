"""A trained nnU-Net as a `plaque.inference.Predictor`: nnU-Net's own predictor, rebuilt from our ``best.pt``.

`plaque.baselines.nnunet.run` records what nnU-Net needs to predict in the model's self-contained ``best.pt``
(`nnunet_record`): its plans and ``dataset.json``, the trainer and configuration, the mirroring axes, whether
test-time mirroring is on, and the network weights of the checkpoint it predicts with. `nnunet_predictor`
rebuilds nnU-Net's network (``nnUNetTrainer.build_network_architecture``, the architecture our short trainer
shares) and its ``nnUNetPredictor`` from that record alone, so nnU-Net segments new scans without its
working folders, exactly as it predicted the test set.

A stack of cross-sections of one vessel ``(N, s, s)`` in [0, 1] goes back to Hounsfield units inside the
training window, as the export gave nnU-Net its training cases, with voxel spacing (``step_mm``, pixel
spacing, pixel spacing) in nnU-Net's (z, y, x) order; nnU-Net normalises, resamples, predicts with its
sliding window and resamples back to the stack's grid. On a GPU nnU-Net autocasts by itself; on the CPU it
predicts under the automatic precision every method predicts with (`cpu_autocast`, `plaque.precision`): bf16 on
a CPU with native bf16 arithmetic, else float32, as its trainer trains there with ``nnunet.precision: auto``
(the record's ``precision``; records made before it had one predict in float32, as they were validated).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plaque.baselines.nnunet.export import to_hu
from plaque.checkpoint import model_record
from plaque.errors import InputError
from plaque.precision import autocast, resolve_precision

NNUNET_KEYS = ("plans", "dataset_json", "trainer", "configuration", "mirroring_axes", "tta")


def nnunet_record(
    cfg: dict[str, Any],
    preprocess: dict[str, Any],
    checkpoint: dict[str, Any],
    plans: dict[str, Any],
    dataset_json: dict[str, Any],
    configuration: str,
    tta: bool,
    precision: str,
) -> dict[str, Any]:
    """The self-contained ``best.pt`` of a trained nnU-Net: `plaque.checkpoint.model_record` with ``model`` = the
    network weights of nnU-Net's ``checkpoint`` (loaded weights-only) and ``nnunet`` = what its predictor needs
    (``precision``: ``nnunet.precision``, what it predicts under on the CPU)."""
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return model_record(
        "nnunet",
        cfg,
        preprocess,
        model=checkpoint["network_weights"],
        nnunet={
            "plans": plans,
            "dataset_json": dataset_json,
            "trainer": checkpoint["trainer_name"],
            "configuration": configuration,
            "mirroring_axes": None if axes is None else [int(a) for a in axes],
            "tta": bool(tta),
            "precision": precision,
        },
    )


def cpu_autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast to ``precision`` (resolved: bf16, fp16 or fp32 = off) on the CPU; nothing on a GPU, where
    nnU-Net autocasts its forward passes itself."""
    return autocast(device, precision) if device.type == "cpu" else nullcontext()


class NnunetPredictor:
    """nnU-Net's ``nnUNetPredictor`` on the network of a `nnunet_record`."""

    method = "nnunet"

    def __init__(self, record: dict[str, Any], device: torch.device) -> None:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        nn_rec = record["nnunet"]
        plans = PlansManager(nn_rec["plans"])
        config = plans.get_configuration(nn_rec["configuration"])
        heads = plans.get_label_manager(nn_rec["dataset_json"]).num_segmentation_heads
        network = nnUNetTrainer.build_network_architecture(
            plans, config, len(nn_rec["dataset_json"]["channel_names"]), heads, enable_deep_supervision=False
        )
        self.preprocess, self._device = record["preprocess"], device
        self._precision = resolve_precision(nn_rec.get("precision", "fp32"), torch.device("cpu"))  # used on the CPU
        self._predictor = nnUNetPredictor(
            use_mirroring=nn_rec["tta"],
            perform_everything_on_device=device.type == "cuda",
            device=device,
            allow_tqdm=False,
        )
        axes = nn_rec["mirroring_axes"]
        self._predictor.manual_initialization(
            network,
            plans,
            config,
            [record["model"]],
            nn_rec["dataset_json"],
            nn_rec["trainer"],
            None if axes is None else tuple(axes),
        )

    def predict(self, images: np.ndarray, spacing_mm: float) -> np.ndarray:
        """Cross-sections of one vessel ``(N, s, s)`` in [0, 1], ``spacing_mm`` their pixel spacing → ``(N, s, s)``
        uint8 (see the module docstring)."""
        if len(images) == 0:
            return np.zeros(np.shape(images), dtype=np.uint8)
        hu = to_hu(images, self.preprocess["window_hu"])[None]  # (1, N, s, s): one CT channel
        spacing = [float(self.preprocess["step_mm"]), float(spacing_mm), float(spacing_mm)]
        with cpu_autocast(self._device, self._precision):
            seg = self._predictor.predict_single_npy_array(hu, {"spacing": spacing})
        return np.asarray(seg, dtype=np.uint8)


def nnunet_predictor(checkpoint: Path, record: dict[str, Any], device: torch.device) -> NnunetPredictor:
    """The registry's predictor of ``nnunet`` (`plaque.methods`)."""
    missing = [k for k in NNUNET_KEYS if k not in record.get("nnunet", {})]
    if missing:
        raise InputError(checkpoint, f"is not a trained nnU-Net record (lacks nnunet.{missing[0]})")
    return NnunetPredictor(record, device)
