"""Taming's autoencoders: ``VQModel`` (gradient-trained codebook) and ``EMAVQ`` (EMA codebook).

The model/loss split is upstream's: these modules hold encoder, decoder, codebook and
the two 1x1 convs around it; the loss (``VQLPIPSWithDiscriminator``) is a separate
module whose keys live under ``loss.*`` in an official checkpoint.
"""
import torch
from torch import nn

from models.taming.modules import Decoder, Encoder
from models.taming.quantize import EMAVectorQuantizer, VectorQuantizer


class VQModel(nn.Module):
    """``ddconfig`` is upstream's dict of Encoder/Decoder keywords (``ch``, ``ch_mult``, ...)."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, beta: float = 0.25,
                 legacy: bool = True, dead_code_threshold: float = 0.0):
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy,
                                        dead_code_threshold=dead_code_threshold)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], kernel_size=1)

    def encode(self, x: torch.Tensor):
        """``(quant, emb_loss, info)``; in training mode an EMA codebook updates here."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)``; changes no state in any mode."""
        return self.quantize.indices(self.quant_conv(self.encoder(x)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from code indices ``(B, h, w)``."""
        quant = self.quantize.get_codebook_entry(indices, shape=(*indices.shape, self.embed_dim))
        return self.decode(quant)

    def forward(self, x: torch.Tensor):
        """``(reconstruction, emb_loss)``, as upstream."""
        quant, emb_loss, _ = self.encode(x)
        return self.decode(quant), emb_loss

    def get_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class EMAVQ(VQModel):
    """``VQModel`` whose codebook follows the encoder outputs by exponential moving averages."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, beta: float = 0.25,
                 decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 0.0):
        super().__init__(ddconfig, n_embed, embed_dim, beta=beta)
        # Replaced in place, as upstream does, so the key order stays upstream's.
        self.quantize = EMAVectorQuantizer(n_embed, embed_dim, beta=beta, decay=decay, eps=eps,
                                           dead_code_threshold=dead_code_threshold)
