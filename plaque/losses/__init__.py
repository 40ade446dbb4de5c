"""Losses: the Stage-1 objective and its probe, the Stage-2 segmentation loss, LPIPS."""
