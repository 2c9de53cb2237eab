"""VqVae2: each clip of ``sequence_length`` frames is coded as one map of ``vocab_size`` codes."""
import torch
from torch import nn

from models.adapter_base import VQOutput
from models.quantizers import FamilySettings, QuantizerSpec, build_quantizers, parse_spec
from models.vq_vae.decoder import Decoder
from models.vq_vae.encoder import Encoder


class VqVae2(nn.Module):
    """Frames ``(b*d, C, H, W)`` -> codes ``(b, H/f, W/f)`` -> frames, with ``f = 2**(group_count-1)``.

    ``quantizer`` (a ``models.quantizers`` spec) picks the quantizer; by default ``decay == 0``
    selects the learned codebook (``vq``), ``decay > 0`` the EMA codebook (``ema``). ``n_init`` (the code dimension) must be a
    multiple of ``group_count * n_hid``: the temporal convs use one group per feature channel.
    """

    def __init__(self, group_count: int, n_hid: int, n_blk_per_group: int, vocab_size: int, n_init: int,
                 input_channels: int, output_channels: int, commitment_cost: float, decay: float,
                 dead_code_threshold: float, sequence_length: int, quantizer=None):
        super().__init__()
        self.sequence_length = sequence_length
        self.input_channels = input_channels
        self.vocab_size = vocab_size
        self.spatial_factor = 2 ** (group_count - 1)
        self.encoder = Encoder(group_count, n_hid, n_blk_per_group, input_channels, n_init, sequence_length)
        spec = parse_spec(quantizer) or QuantizerSpec("ema" if decay > 0 else "vq")
        settings = FamilySettings(commitment_cost=commitment_cost, decay=decay, dead_code_threshold=dead_code_threshold)
        (self.quantizer,) = build_quantizers([spec], n_init, vocab_size, settings)
        self.decoder = Decoder(group_count, n_hid, n_blk_per_group, output_channels, n_init, sequence_length)

    def forward(self, frames: torch.Tensor) -> VQOutput:
        self._check_frames(frames)
        quantized, vq_loss, indices, stats = self.quantizer(self.encoder(frames))
        recon = self.decoder(quantized)
        return VQOutput(vq_loss, recon, stats["perplexity"], indices)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Code indices ``(b, h, w)`` (``(b, depth, h, w)`` for residual VQ); never changes state."""
        self._check_frames(frames)
        return self.quantizer.encode(self.encoder(frames))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Frames ``(b*d, C, H, W)`` of code indices ``(b, h, w)``."""
        return self.decoder(self.quantizer.decode(indices))

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 4 or frames.shape[1] != self.input_channels:
            raise ValueError(
                f"VqVae2 expects frames shaped (batch*sequence, {self.input_channels}, H, W), got {tuple(frames.shape)}"
            )
        if frames.shape[0] % self.sequence_length:
            raise ValueError(
                f"VqVae2: {frames.shape[0]} frames is not a whole number of clips of sequence_length {self.sequence_length}"
            )
        height, width = frames.shape[-2:]
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(
                f"VqVae2: frame size {height}x{width} is not a multiple of {self.spatial_factor} (2 ** (group_count - 1))"
            )
