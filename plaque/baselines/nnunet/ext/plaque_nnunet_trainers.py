"""Trainer classes nnU-Net finds through ``nnUNet_extTrainer`` (this module is imported as a top-level module)."""

from plaque.baselines.nnunet.trainer import nnUNetTrainer_Plaque

__all__ = ["nnUNetTrainer_Plaque"]
