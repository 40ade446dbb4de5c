"""The folder ``nnUNet_extTrainer`` points at: nnU-Net imports each module here as a top-level module and looks
for the requested trainer class in it (`plaque.baselines.nnunet.trainer`)."""
