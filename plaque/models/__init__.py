"""Networks: SAM encoders and their pretraining, the Stage-1 VQ prior, FAA, decoders, the segmenters, and their
construction from the method registry (`plaque.models.build`)."""
