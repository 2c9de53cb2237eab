"""Taming's autoencoders: ``VQModel`` (gradient-trained codebook) and ``EMAVQ`` (EMA codebook).

The model/loss split is upstream's: these modules hold encoder, decoder, codebook and
the two 1x1 convs around it; the loss (``VQLPIPSWithDiscriminator``) is a separate
module whose keys live under ``loss.*`` in an official checkpoint.
"""
import torch
from torch import nn

from models.quantizers import FamilySettings, QuantizerSpec, build_quantizers, parse_spec
from models.taming.modules import Decoder, Encoder


class VQModel(nn.Module):
    """``ddconfig`` is upstream's dict of Encoder/Decoder keywords (``ch``, ``ch_mult``, ...).

    ``quantizer`` (a ``models.quantizers`` spec) replaces the default ``vq`` codebook, which
    keeps upstream's ``quantize.embedding.weight``.
    """

    default_quantizer = QuantizerSpec("vq")

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, beta: float = 0.25,
                 legacy: bool = True, dead_code_threshold: float = 0.0, decay: float = 0.99, quantizer=None):
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        settings = FamilySettings(commitment_cost=beta, decay=decay, dead_code_threshold=dead_code_threshold,
                                  taming={"beta": beta, "legacy": legacy})
        (self.quantize,) = build_quantizers([parse_spec(quantizer) or self.default_quantizer], embed_dim, n_embed,
                                            settings)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], kernel_size=1)

    def encode(self, x: torch.Tensor):
        """``QuantizerResult(quant, emb_loss, indices, stats)``; in training mode an EMA codebook updates here."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)``; changes no state in any mode."""
        return self.quantize.encode(self.quant_conv(self.encoder(x)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from code indices ``(B, h, w)``."""
        return self.decode(self.quantize.decode(indices))

    def forward(self, x: torch.Tensor):
        """``(reconstruction, emb_loss)``, as upstream."""
        quant, emb_loss = self.encode(x)[:2]
        return self.decode(quant), emb_loss

    def get_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class EMAVQ(VQModel):
    """``VQModel`` whose codebook follows the encoder outputs by exponential moving averages
    (``quantize.embedding.{weight,cluster_size,embed_avg}``, upstream's keys)."""

    default_quantizer = QuantizerSpec("ema")
