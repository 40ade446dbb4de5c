"""Baselines that are not variants of the Stage-2 segmenter: each trains, predicts the test patients and writes
``PREDICTIONS/<patient>.npz`` in the layout `plaque.eval.predictions` reads, so the one evaluator scores them all.

- `plaque.baselines.nnunet`: the real nnU-Net v2 (2D configuration), driven through its own command-line tools.
"""
