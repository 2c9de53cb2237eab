"""Encoder: DALL-E style residual groups per frame, then the clip's frames folded into channels."""
from einops import rearrange
from torch import nn


class EncoderBlock(nn.Module):
    """Identity (or 1x1 projection) plus a 4-conv bottleneck path scaled by 1/n_layers**2.

    The small gain keeps a deep stack close to the identity at initialisation (DALL-E).
    """

    def __init__(self, n_in: int, n_out: int, n_layers: int):
        super().__init__()
        n_mid = max(n_out // 4, 1)
        self.id_path = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(
            nn.ReLU(), nn.Conv2d(n_in, n_mid, 3, padding=1),
            nn.ReLU(), nn.Conv2d(n_mid, n_mid, 3, padding=1),
            nn.ReLU(), nn.Conv2d(n_mid, n_mid, 3, padding=1),
            nn.ReLU(), nn.Conv2d(n_mid, n_out, 1),
        )
        self.post_gain = 1 / n_layers**2

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)


class Encoder(nn.Module):
    """``(b*d, C, H, W)`` frames -> ``(b, n_init, H/f, W/f)`` with ``f = 2**(group_count-1)``.

    Group ``g`` (1-based) is ``n_blk_per_group`` blocks of width ``g * n_hid``; a 2x
    max-pool separates groups. The ``d`` frames of a clip are then stacked along
    channels and a grouped 3x3 conv mixes each feature channel across time.
    """

    def __init__(self, group_count: int, n_hid: int, n_blk_per_group: int,
                 input_channels: int, n_init: int, sequence_length: int):
        super().__init__()
        self.sequence_length = sequence_length
        n_layers = group_count * n_blk_per_group
        layers = [nn.Conv2d(input_channels, n_hid, 7, padding=3)]
        width = n_hid
        for group in range(1, group_count + 1):
            for _ in range(n_blk_per_group):
                layers.append(EncoderBlock(width, group * n_hid, n_layers))
                width = group * n_hid
            if group < group_count:
                layers.append(nn.MaxPool2d(2))
        self.spatial = nn.Sequential(*layers)
        # one group per feature channel: its d frames -> n_init / width code channels
        self.temporal = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width * sequence_length, n_init, 3, padding=1, groups=width),
        )

    def forward(self, frames):
        features = self.spatial(frames)
        clips = rearrange(features, "(b d) c h w -> b (c d) h w", d=self.sequence_length)
        return self.temporal(clips)
