"""One trainer for every model (`plaque.train.trainer`): DDP under `torchrun` (`plaque.train.distributed`), early
stopping, resumable checkpoints, DVCLive; the stage entry points (foundation, stage1, stage2)."""
