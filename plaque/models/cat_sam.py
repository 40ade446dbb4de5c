"""The CAT-SAM baseline (Xiao et al., ECCV 2024, variant CAT-SAM-T) with a multi-class head.

Data path for slices ``x`` (B, 1, s, s) in [0, 1] (s = the stored slice size), with W the encoder's
width, g = S / patch the embedding grid and D = 256:

1. SAM input as in `plaque.models.segmenter.PriorSegmenter` (`sam_input`): (B, 3, S, S).
2. Image encoder, frozen (CAT-SAM): SAM's ``ImageEncoderViT`` run block by block by `CatSamSegmenter.encode`
   with the *prompt bridge* of CAT-SAM-T. One learnable decoder token t (``hq_token``, (1, D), HQ-SAM's
   "HQ output token") is projected, separately for every block i, by a small MLP
   (``hq_token_proj[i]``: D → D/4 → W, GELU, CAT-SAM's ``Adapter`` with ratio 0.25) to a prompt token
   p_i (W,). In block i the prompt token is prepended to every sequence the attention sees, after the
   block's ``norm1`` (as CAT-SAM does): to the whole g × g grid in the global-attention blocks, to each
   (zero-padded) window in the windowed blocks. It goes through the block's frozen ``qkv``, so image
   tokens attend over [p_i; image tokens] and p_i's own output is dropped before ``proj``. SAM's
   decomposed relative-position bias is defined for image-to-image pairs only: the prompt's row and
   column of the bias are zero (CAT-SAM pads the bias matrix with zeros the same way). The block's
   attention is `plaque.models.attention.SdpaAttention` (every encoder that `build_image_encoder`
   makes has it), which takes the prompt token and runs on the fused SDPA kernels; without a prompt
   it computes SAM's attention (the tests check both against written-out references to 1e-5).
   Outputs: the neck embedding F (B, D, g, g) and the early ViT feature E (B, W, g, g), the output of
   the first global-attention block (HQ-SAM's ``interm_embeddings[0]``).
3. HQ feature, as in HQ-SAM's mask decoder (B, D/8, 4g, 4g)::

       H = embedding_maskfeature(output_upscaling(F)) + embedding_encoder(F) + compress_vit_feat(E)

   ``output_upscaling`` is SAM's mask-decoder upscaling (two stride-2 transposed convolutions,
   `plaque.models.decoders.output_upscaling`), loaded from SAM's ``mask_decoder.output_upscaling.*``
   when official weights are used (`plaque.models.sam.load_sam_mask_decoder`) and frozen like all of
   SAM; ``embedding_maskfeature`` (two 3×3 convolutions), ``embedding_encoder`` (F → 4g) and
   ``compress_vit_feat`` (E → 4g) are HQ-SAM's, trained.
4. Multi-class head (our adaptation). HQ-SAM and CAT-SAM output one mask, the dot product of the
   HQ feature with ``hf_mlp(t')`` (t' = the token after SAM's two-way transformer). Here a per-pixel
   linear map gives C class logits (`plaque.models.decoders.ClassMap`, the map of our multi-class head,
   so that both heads train alike), conditioned on the same token t that drives the prompt bridge:
   ``hf_mlp`` (HQ-SAM's 3-layer MLP, D → D → D/8) turns t into a per-channel bias of H::

       logits = classifier(GELU(H + hf_mlp(t)))        (B, C, 4g, 4g)

   then resized once, bilinearly, to s × s (`resize_bilinear`), as the other decoders do. There are
   no prompts and no two-way transformer, so t is an input-independent learned vector: without the
   GELU its bias would fold into the classifier's bias; with it, t sets where each channel of H is
   gated, and t gets gradients from the head and, through every block's prompt, from the encoder.

Frozen: the whole image encoder and ``output_upscaling`` (``requires_grad=False``); they have no
dropout or batch norm, so ``train()`` needs no override. `CatSamSegmenter.trainable_parameters` yields
the token, the per-block projections, the HQ-feature parts, ``hf_mlp`` and the classifier. The image
encoder keeps the attribute name ``image_encoder`` (state-dict keys ``image_encoder.*`` as in
``PriorSegmenter`` and in SAM's checkpoints) and is never modified: calling it directly still runs
plain SAM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor

from plaque.classes import NUM_CLASSES
from plaque.models.attention import use_sdpa_attention
from plaque.models.decoders import ClassMap, output_upscaling
from plaque.models.resize import resize_bilinear
from plaque.models.sam import OUT_CHANNELS as EMBED_DIM
from plaque.models.sam import PIXEL_MEAN, PIXEL_STD, sam_input

BRIDGE_RATIO = 0.25  # hidden width of each prompt projection / D (CAT-SAM-T's Adapter, mlp_ratio=0.25)
FROZEN_PREFIXES = ("image_encoder.", "output_upscaling.")


class EncoderFeatures(NamedTuple):
    """What `CatSamSegmenter.encode` returns.

    Attributes:
        embedding: the neck output F (B, D, g, g).
        early: the first global-attention block's output E (B, W, g, g).
    """

    embedding: Tensor
    early: Tensor


def prompt_block(
    block: Block,
    x: Tensor,
    prompt: Tensor | None,
    attention: Callable[[nn.Module, Tensor, Tensor | None], Tensor] | None = None,
) -> Tensor:
    """SAM's ``Block.forward`` on x (B, g, g, W) with ``prompt`` (W,) or ``None`` passed to the block's
    attention (an `SdpaAttention`), or to ``attention(block.attn, windows, prompt)`` when given."""
    shortcut = x
    x = block.norm1(x)
    if block.window_size > 0:
        h, w = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, block.window_size)
    x = block.attn(x, prompt) if attention is None else attention(block.attn, x, prompt)
    if block.window_size > 0:
        x = window_unpartition(x, block.window_size, pad_hw, (h, w))
    x = shortcut + x
    return x + block.mlp(block.norm2(x))


def token_projection(dim: int, width: int, ratio: float = BRIDGE_RATIO) -> nn.Sequential:
    """CAT-SAM-T's per-block prompt projection: (…, dim) → (…, width) by Linear, GELU, Linear."""
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, width))


class CatSamSegmenter(nn.Module):
    """(B, 1, s, s) slices → (B, C, s, s) logits: CAT-SAM-T on a frozen SAM encoder, HQ-SAM feature, multi-class head.

    See the module docstring for each step.
    """

    def __init__(
        self,
        *,
        image_encoder: ImageEncoderViT,
        input_size: int,
        num_classes: int = NUM_CLASSES,
        embed_dim: int = EMBED_DIM,
    ) -> None:
        """
        Args:
            image_encoder: SAM image encoder, (B, 3, S, S) → (B, ``embed_dim``, g, g), frozen here (its
                attention becomes `SdpaAttention` if it is not already); it needs at least one
                global-attention block (the early feature).
            input_size: S, the encoder's input side.
            num_classes: C.
            embed_dim: D, channels of the image embedding and of the decoder token (256 for SAM).
        """
        super().__init__()
        globals_ = [i for i, block in enumerate(image_encoder.blocks) if block.window_size == 0]
        if not globals_:
            raise ValueError("the image encoder has no global-attention block to take the early ViT feature from")
        if embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8, got {embed_dim}")
        width = image_encoder.patch_embed.proj.out_channels
        self.input_size, self.early_block = input_size, globals_[0]
        self.image_encoder = use_sdpa_attention(image_encoder).requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        # Decoder token and prompt bridge (CAT-SAM-T).
        self.hq_token = nn.Embedding(1, embed_dim)
        self.hq_token_proj = nn.ModuleList(token_projection(embed_dim, width) for _ in image_encoder.blocks)
        # SAM's mask-decoder upscaling (frozen) and HQ-SAM's feature parts.
        self.output_upscaling = output_upscaling(embed_dim, nn.GELU).requires_grad_(False)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(embed_dim // 8, embed_dim // 4, 3, padding=1),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.Conv2d(embed_dim // 4, embed_dim // 8, 3, padding=1),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim // 4, embed_dim // 8, kernel_size=2, stride=2),
        )
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(width, embed_dim, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim // 8, kernel_size=2, stride=2),
        )
        # Multi-class head conditioned on the token (our adaptation).
        self.hf_mlp = MLP(embed_dim, embed_dim, embed_dim // 8, 3)
        self.classifier = ClassMap(embed_dim // 8, num_classes, embed_dim=embed_dim)

    def sam_mask_decoder_part(self) -> nn.Module:
        """The module holding SAM's mask-decoder ``output_upscaling``, loaded from a SAM checkpoint."""
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Token, prompt projections, HQ-feature parts, ``hf_mlp`` and classifier; never SAM's weights."""
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith(FROZEN_PREFIXES):
                yield p

    def preprocess(self, x: Tensor) -> Tensor:
        """Slices (B, 1, s, s) in [0, 1] → SAM input (B, 3, S, S) (`sam_input`)."""
        return sam_input(x, self.input_size, self.pixel_mean, self.pixel_std)

    def prompt_tokens(self) -> list[Tensor]:
        """The prompt token of every encoder block, each (W,), projected from the decoder token."""
        token = self.hq_token.weight[0]
        return [proj(token) for proj in self.hq_token_proj]

    def block_outputs(self, images: Tensor, prompts: Sequence[Tensor | None] | None = None) -> Iterator[Tensor]:
        """SAM input (B, 3, S, S) through the frozen encoder's blocks with the prompt bridge: yields each
        block's output (B, g, g, W) in order.

        ``prompts``: one (W,) token or ``None`` (SAM's plain attention) per block; default `prompt_tokens`.
        """
        encoder = self.image_encoder
        if prompts is None:
            prompts = self.prompt_tokens()
        if len(prompts) != len(encoder.blocks):
            raise ValueError(f"expected {len(encoder.blocks)} prompts, one per block, got {len(prompts)}")
        x = encoder.patch_embed(images)  # (B, g, g, W)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for block, prompt in zip(encoder.blocks, prompts):
            x = prompt_block(block, x, prompt)
            yield x

    def encode(self, images: Tensor, prompts: Sequence[Tensor | None] | None = None) -> EncoderFeatures:
        """SAM input (B, 3, S, S) → `EncoderFeatures` (`block_outputs`, then SAM's neck on the last one).

        Holds on to the early block's output and the current one only, not every block's.
        """
        early = x = None
        for n, x in enumerate(self.block_outputs(images, prompts)):
            if n == self.early_block:
                early = x
        return EncoderFeatures(self.image_encoder.neck(x.permute(0, 3, 1, 2)), early.permute(0, 3, 1, 2))

    def hq_features(self, embedding: Tensor, early: Tensor) -> Tensor:
        """HQ-SAM's feature H (B, D/8, 4g, 4g) from the embedding (B, D, g, g) and the early feature (B, W, g, g)."""
        upscaled = self.embedding_maskfeature(self.output_upscaling(embedding))
        return upscaled + self.embedding_encoder(embedding) + self.compress_vit_feat(early)

    def head(self, hq: Tensor) -> Tensor:
        """HQ feature (B, D/8, 4g, 4g) → logits (B, C, 4g, 4g), conditioned on the decoder token."""
        bias = self.hf_mlp(self.hq_token.weight).view(1, -1, 1, 1)  # (1, D/8, 1, 1)
        return self.classifier(F.gelu(hq + bias.to(hq.dtype)))

    def forward(self, x: Tensor) -> Tensor:
        """Slices (B, 1, s, s) in [0, 1] → logits (B, C, s, s)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected slices of shape (B, 1, H, W), got {tuple(x.shape)}")
        features = self.encode(self.preprocess(x))
        logits = self.head(self.hq_features(features.embedding, features.early))
        return resize_bilinear(logits, (x.shape[-2], x.shape[-1]))


def build_cat_sam(
    cfg_stage2: dict[str, Any], image_encoder: ImageEncoderViT, prior: nn.Module | None = None, *, fusion: str = "none"
) -> CatSamSegmenter:
    """The CAT-SAM segmenter on ``image_encoder`` (built for ``cfg_stage2["input_size"]``, frozen here).

    The builder of the registry's ``cat_sam`` (`plaque.methods`): CAT-SAM reads no prior.

    Args:
        cfg_stage2: the resolved ``stage2`` section (``input_size`` and ``embed_dim`` are read).
        image_encoder: SAM image encoder, official weights already loaded if any.
        prior, fusion: must be ``None`` and ``"none"``.
    """
    if prior is not None or fusion != "none":
        raise ValueError("CAT-SAM takes no prior")
    return CatSamSegmenter(
        image_encoder=image_encoder, input_size=cfg_stage2["input_size"], embed_dim=cfg_stage2["embed_dim"]
    )
