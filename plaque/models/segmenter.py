"""Stage-2 segmenter: SAM image encoder + frozen VQ prior, fused by FAA, decoded to C class logits.

Data path for slices ``x`` (B, 1, s, s) in [0, 1] (s = the stored slice size):

1. SAM input: ``x`` resized bilinearly to S = ``input_size`` (antialiased
   when shrinking), scaled to 0..255, replicated to 3 channels and normalised
   with SAM's pixel mean/std → (B, 3, S, S). The image encoder gives the SAM
   embedding F_sam (B, D, g, g), g = S / patch size, D = ``embed_dim`` (SAM: 256).
2. Prior: the frozen Stage-1 encoder reads ``x`` at its own resolution s and
   returns the quantized latent z_q (B, d, s/f, s/f). It is resized bilinearly
   (align_corners=False, antialiased when shrinking) to g × g — bilinear
   upsampling blends neighbouring code vectors, so the prior is smooth on the
   SAM grid rather than blocky — then the adapter (a ``adapter_kernel`` ×
   ``adapter_kernel`` convolution, d → D) gives F_vq (B, D, g, g).
   Resize-then-adapt is the appendix's order; for the 1×1 adapter both orders
   give the same map.
3. Fusion (``fusion``): ``"faa"`` FAA(F_sam, F_vq) (the method); ``"add"``
   F_sam + F_vq (the additive-fusion ablation); ``"none"`` F_sam alone (the
   no-prior ablation, built without a prior).
4. Decoder (``MultiClassHead`` or ``ClassTokenDecoder``): logits on its 4g grid,
   resized once, bilinearly, to the slice size s → (B, C, s, s), the resolution
   of the labels. Going straight from 4g to s (antialiased when shrinking)
   equals SAM's "upsample to S, then to the original size" up to resampling
   error, without the (B, C, S, S) intermediate (S = 1024 for ViT-B).

The prior is frozen for good: its parameters do not require gradients, it runs
under ``torch.no_grad()``, and it stays in eval mode whatever ``train()`` is
called with, so its EMA codebook and all other buffers never change. It is
still a submodule: ``.to()`` moves it and ``state_dict()`` holds it, so a
Stage-2 checkpoint is self-contained; ``trainable_parameters()`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch import Tensor

from plaque.classes import NUM_CLASSES
from plaque.methods import FUSIONS
from plaque.models.decoders import ClassTokenDecoder, MultiClassHead
from plaque.models.resize import resize_bilinear
from plaque.models.sam import OUT_CHANNELS as EMBED_DIM
from plaque.models.sam import PIXEL_MEAN, PIXEL_STD, sam_input

if TYPE_CHECKING:
    from plaque.models.vq import VQAutoencoder


class PriorSegmenter(nn.Module):
    """(B, 1, s, s) slices → (B, C, s, s) logits; see the module docstring for each step."""

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        decoder: nn.Module,
        prior: VQAutoencoder | None,
        input_size: int,
        fusion: str = "faa",
        adapter_kernel: int = 1,
        faa_heads: int = 4,
        faa_dropout: float = 0.1,
        embed_dim: int = EMBED_DIM,
    ) -> None:
        """
        Args:
            image_encoder: SAM image encoder, (B, 3, S, S) → (B, ``embed_dim``, g, g).
            decoder: ``decoder(embedding (B, embed_dim, g, g), output_size) → (B, C, *output_size)``.
            prior: Stage-1 autoencoder, frozen here; ``None`` only with ``fusion="none"``.
            input_size: S, the encoder's input side.
            fusion: ``"faa"``, ``"add"`` or ``"none"``.
            adapter_kernel: odd side of the adapter convolution (1 in the paper).
            faa_heads, faa_dropout: FAA settings.
            embed_dim: channels of the image embedding (256 for SAM).
        """
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if (prior is None) != (fusion == "none"):
            raise ValueError(f"fusion={fusion!r} {'needs' if prior is None else 'takes no'} prior")
        if adapter_kernel % 2 == 0:
            raise ValueError(f"adapter_kernel must be odd (size-preserving), got {adapter_kernel}")
        self.input_size, self.fusion = input_size, fusion
        self.image_encoder, self.decoder = image_encoder, decoder
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.prior = prior.eval().requires_grad_(False) if prior is not None else None
        self.adapter: nn.Module | None = None
        self.faa: nn.Module | None = None
        if prior is not None:
            self.adapter = nn.Conv2d(prior.quantizer.dim, embed_dim, adapter_kernel, padding=adapter_kernel // 2)
        if fusion == "faa":
            from plaque.models.faa import FAA  # here, so that a model without FAA never loads its module

            self.faa = FAA(embed_dim, heads=faa_heads, dropout=faa_dropout)

    def train(self, mode: bool = True) -> PriorSegmenter:
        """Set training mode on everything but the prior, which stays in eval mode."""
        super().train(mode)
        if self.prior is not None:
            self.prior.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that require gradients, never the prior's."""
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("prior."):
                yield p

    def sam_mask_decoder_part(self) -> nn.Module | None:
        """The submodule that takes SAM's pretrained mask-decoder weights: the class-token decoder, else none."""
        return self.decoder if isinstance(self.decoder, ClassTokenDecoder) else None

    def preprocess(self, x: Tensor) -> Tensor:
        """Slices (B, 1, s, s) in [0, 1] → SAM input (B, 3, S, S) (`sam_input`)."""
        return sam_input(x, self.input_size, self.pixel_mean, self.pixel_std)

    def prior_features(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Adapted prior F_vq (B, embed_dim, *grid) from slices (B, 1, s, s); gradients reach the adapter only."""
        with torch.no_grad():
            z_q, _ = self.prior.encode(x)
            z_q = resize_bilinear(z_q, grid)
        return self.adapter(z_q)

    def forward(self, x: Tensor) -> Tensor:
        """Slices (B, 1, s, s) in [0, 1] → logits (B, C, s, s)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected slices of shape (B, 1, H, W), got {tuple(x.shape)}")
        f_sam = self.image_encoder(self.preprocess(x))
        grid = (f_sam.shape[-2], f_sam.shape[-1])
        if self.fusion == "faa":
            fused = self.faa.forward_maps(f_sam, self.prior_features(x, grid))
        elif self.fusion == "add":
            fused = f_sam + self.prior_features(x, grid)
        else:
            fused = f_sam
        return self.decoder(fused, (x.shape[-2], x.shape[-1]))


def build_decoder(name: str, *, embed_dim: int = EMBED_DIM, num_classes: int = NUM_CLASSES) -> nn.Module:
    """``"head"`` → ``MultiClassHead``; ``"class_tokens"`` → ``ClassTokenDecoder`` with SAM's mask-decoder
    proportions (depth 2, 8 heads, MLP 8 × ``embed_dim``: SAM's size at 256)."""
    if name == "head":
        return MultiClassHead(embed_dim=embed_dim, num_classes=num_classes)
    if name == "class_tokens":
        return ClassTokenDecoder(embed_dim=embed_dim, num_classes=num_classes, mlp_dim=8 * embed_dim)
    raise ValueError(f"unknown decoder {name!r}; choose 'head' or 'class_tokens'")


def build_segmenter(
    cfg: dict[str, Any], image_encoder: nn.Module, prior: VQAutoencoder | None, *, fusion: str | None = None
) -> PriorSegmenter:
    """Build the segmenter from the resolved ``stage2`` section of params.yaml.

    Args:
        cfg: the resolved ``stage2`` section (``input_size``, ``embed_dim``, ``decoder``,
            ``prior.adapter_kernel``, ``faa.heads``, ``faa.dropout`` are read).
        image_encoder: SAM image encoder for inputs of side ``cfg["input_size"]``.
        prior: the Stage-1 autoencoder (frozen here), or ``None`` for the no-prior ablation.
        fusion: ``"faa"``, ``"add"`` or ``"none"``; default ``"faa"`` with a prior, ``"none"`` without.
    """
    if fusion is None:
        fusion = "faa" if prior is not None else "none"
    return PriorSegmenter(
        image_encoder=image_encoder,
        decoder=build_decoder(cfg["decoder"], embed_dim=cfg["embed_dim"]),
        prior=prior,
        input_size=cfg["input_size"],
        fusion=fusion,
        adapter_kernel=cfg["prior"]["adapter_kernel"],
        faa_heads=cfg["faa"]["heads"],
        faa_dropout=cfg["faa"]["dropout"],
        embed_dim=cfg["embed_dim"],
    )
