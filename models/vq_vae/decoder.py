"""Decoder: the encoder mirrored — codes unfolded back to frames, then residual groups upwards."""
from einops import rearrange
from torch import nn


class DecoderBlock(nn.Module):
    """Identity (or 1x1 projection) plus a 4-conv path (1x1 then three 3x3) scaled by 1/n_layers**2."""

    def __init__(self, n_in: int, n_out: int, n_layers: int):
        super().__init__()
        n_mid = max(n_out // 4, 1)
        self.id_path = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(
            nn.ReLU(), nn.Conv2d(n_in, n_mid, 1),
            nn.ReLU(), nn.Conv2d(n_mid, n_mid, 3, padding=1),
            nn.ReLU(), nn.Conv2d(n_mid, n_mid, 3, padding=1),
            nn.ReLU(), nn.Conv2d(n_mid, n_out, 3, padding=1),
        )
        self.post_gain = 1 / n_layers**2

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)


class Decoder(nn.Module):
    """``(b, n_init, h, w)`` quantized codes -> ``(b*d, C, h*f, w*f)`` frames."""

    def __init__(self, group_count: int, n_hid: int, n_blk_per_group: int,
                 output_channels: int, n_init: int, sequence_length: int):
        super().__init__()
        self.sequence_length = sequence_length
        n_layers = group_count * n_blk_per_group
        width = group_count * n_hid
        self.temporal = nn.Conv2d(n_init, width * sequence_length, 3, padding=1, groups=width)
        layers = []
        for group in range(group_count, 0, -1):
            for _ in range(n_blk_per_group):
                layers.append(DecoderBlock(width, group * n_hid, n_layers))
                width = group * n_hid
            if group > 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.spatial = nn.Sequential(*layers)
        self.output = nn.Sequential(nn.ReLU(), nn.Conv2d(width, output_channels, 1))

    def forward(self, codes):
        clips = self.temporal(codes)
        frames = rearrange(clips, "b (c d) h w -> (b d) c h w", d=self.sequence_length)
        return self.output(self.spatial(frames))

    @property
    def last_layer(self):
        return self.output[-1].weight
