"""Multi-class decoders on the fused image embedding (appendix 1.4, "multi-class decoding").

Both map an embedding (B, D, g, g) (D = 256 for SAM) to logits (B, C, H, W)
for ``output_size`` (H, W) with C = ``num_classes``:

- ``MultiClassHead``: LayerNorm2d, SAM's output upscaling (two stride-2
  transposed convolutions, 4g × 4g), a per-pixel linear map to C classes
  (`ClassMap`: a 1×1 convolution whose weights a hypernetwork makes from learned
  class embeddings).
- ``ClassTokenDecoder``: SAM's mask decoder without prompts or IoU head: C
  learnable class tokens and the embedding (plus SAM's random-Fourier dense
  positional encoding) pass through SAM's ``TwoWayTransformer``; one
  hypernetwork MLP per class turns its token into weights that are dotted with
  the upscaled embedding (D / 8 channels at 4g × 4g) to give that class's logit
  map. Submodule names (``transformer``, ``pe_layer``, ``output_upscaling``,
  ``output_hypernetworks_mlps``) follow SAM's, so its pretrained mask-decoder
  weights can be loaded into the shared parts.

Both produce logits on the 4g × 4g grid and resize them once to
``output_size`` with ``resize_bilinear``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from segment_anything.modeling.transformer import TwoWayTransformer
from torch import Tensor

from plaque.classes import NUM_CLASSES
from plaque.models.resize import resize_bilinear


def output_upscaling(dim: int, activation: type[nn.Module]) -> nn.Sequential:
    """SAM's ×4 upscaling: (B, dim, g, g) → (B, dim / 8, 4g, 4g) by two stride-2 transposed convolutions."""
    return nn.Sequential(
        nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
        LayerNorm2d(dim // 4),
        activation(),
        nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        activation(),
    )


class ClassMap(nn.Module):
    """A per-pixel linear map from K feature channels to C class logits: (B, K, h, w) → (B, C, h, w).

    A 1×1 convolution in function (its C weight vectors do not depend on the image), parametrised as SAM's
    mask decoder forms mask weights: C learned class embeddings (width D) pass through a hypernetwork MLP
    (D → D → D → K, SAM's ``MLP``) to give each class its weights over the K channels, plus a bias per
    class. Why not a plain convolution: under AdamW at the appendix's learning rate (1e-4) every weight
    moves about 1e-4 a step, so a plain 1×1 convolution on K = 32 channels grows its logits slowly. In the
    demo, after 512 steps the plain head's logits spanned 5.4 (mean probability of calcified plaque on its
    own pixels 0.10, of non-calcified 0.05: neither was ever predicted); made from wide embeddings, the same
    map spans 24.6 after the same steps (calcified 0.45, validation Dice 0.58 instead of 0). The functions it
    can represent are the convolution's; only how fast training reaches them differs.
    """

    def __init__(self, channels: int, num_classes: int = NUM_CLASSES, *, embed_dim: int = 256) -> None:
        """
        Args:
            channels: K, the feature channels.
            num_classes: C.
            embed_dim: D, the width of the class embeddings and the hypernetwork.
        """
        super().__init__()
        self.class_embed = nn.Embedding(num_classes, embed_dim)
        self.hypernetwork = MLP(embed_dim, embed_dim, channels, 3)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def weights(self) -> Tensor:
        """The map's weights (C, K)."""
        return self.hypernetwork(self.class_embed.weight)

    def forward(self, features: Tensor) -> Tensor:
        """Features (B, K, h, w) → logits (B, C, h, w)."""
        return torch.einsum("ck,bkhw->bchw", self.weights(), features) + self.bias.view(1, -1, 1, 1)


class MultiClassHead(nn.Module):
    """Lightweight head: LayerNorm2d → SAM's ×4 output upscaling → `ClassMap` to C logits → resize."""

    def __init__(
        self, *, embed_dim: int = 256, num_classes: int = NUM_CLASSES, activation: type[nn.Module] = nn.GELU
    ) -> None:
        """
        Args:
            embed_dim: channels D of the fused embedding (a multiple of 8).
            num_classes: C.
            activation: activation inside the upscaling.
        """
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8, got {embed_dim}")
        self.norm = LayerNorm2d(embed_dim)
        self.output_upscaling = output_upscaling(embed_dim, activation)
        self.classifier = ClassMap(embed_dim // 8, num_classes, embed_dim=embed_dim)

    def forward(self, embedding: Tensor, output_size: int | tuple[int, int]) -> Tensor:
        """Embedding (B, D, g, g) → logits (B, C, *output_size)."""
        logits = self.classifier(self.output_upscaling(self.norm(embedding)))
        return resize_bilinear(logits, output_size)


class ClassTokenDecoder(nn.Module):
    """C class tokens through SAM's two-way transformer; per-class hypernetworks give C mask logits.

    Defaults are SAM's mask decoder: width 256, depth 2, 8 heads, MLP width 2048.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_classes: int = NUM_CLASSES,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        """
        Args:
            embed_dim: channels D of the fused embedding and of the transformer (a multiple of 8).
            num_classes: C, the number of class tokens and output masks.
            depth, num_heads, mlp_dim: of the ``TwoWayTransformer`` (``num_heads`` must divide D / 2).
            activation: activation inside the upscaling.
        """
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8, got {embed_dim}")
        self.num_classes = num_classes
        self.class_tokens = nn.Embedding(num_classes, embed_dim)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.transformer = TwoWayTransformer(depth=depth, embedding_dim=embed_dim, num_heads=num_heads, mlp_dim=mlp_dim)
        self.output_upscaling = output_upscaling(embed_dim, activation)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(embed_dim, embed_dim, embed_dim // 8, 3) for _ in range(num_classes)
        )

    def forward(self, embedding: Tensor, output_size: int | tuple[int, int]) -> Tensor:
        """Embedding (B, D, g, g) → logits (B, C, *output_size)."""
        b, d, h, w = embedding.shape
        pe = self.pe_layer((h, w)).unsqueeze(0).to(embedding.dtype)  # (1, D, g, g), broadcast over the batch
        tokens = self.class_tokens.weight.unsqueeze(0).expand(b, -1, -1)  # (B, C, D)
        tokens_out, image_out = self.transformer(embedding, pe, tokens)  # (B, C, D), (B, g·g, D)
        upscaled = self.output_upscaling(image_out.transpose(1, 2).reshape(b, d, h, w))  # (B, D/8, 4g, 4g)
        hyper = torch.stack(
            [mlp(tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, C, D/8)
        logits = torch.einsum("bcd,bdhw->bchw", hyper, upscaled)
        return resize_bilinear(logits, output_size)
