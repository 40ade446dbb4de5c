"""Networks of the pipeline: the Stage-1 VQ autoencoder (``plaque.models.vq``)."""

from plaque.models.vq import VQAutoencoder, VQOutput, build_vq, freeze

__all__ = ["VQAutoencoder", "VQOutput", "build_vq", "freeze"]
