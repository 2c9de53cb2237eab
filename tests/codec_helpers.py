"""What the codec tests share: tiny checkpoints of every family, clips, and a tiny residual model.

``FakeResidual`` stands in for a residual quantizer (indices ``(b, depth, h, w)``, ``decode``
accepting fewer levels, mixed-radix ``code_factors``): a scalar residual quantizer of each
4x4 block's grey level, so more levels decode closer to the input.
"""
import math
import os

import attrs
import numpy as np
import torch
from torch import nn

from core.checkpoint import save_checkpoint
from core.config_schema import positive
from models.adapter_base import BaseVqVaeAdapter, VQOutput
from models.builders import config_from_dict, create_model

DATA_ARGS = {"sequence_length": 4, "resolution": 16, "batch_size": 2}
TINY = {
    "VqVae2": {"model_args": {"group_count": 2, "n_hid": 4, "n_blk_per_group": 1, "vocab_size": 16, "n_init": 8}},
    "VQVAE2": {"scaling_rates": [2, 2], "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1,
                                                        "nb_levels": 2, "n_init": 4, "vocab_size": 16}},
    "VQVAE2_OptVQ": {"scaling_rates": [2], "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1,
                                                           "nb_levels": 1, "n_init": 4, "vocab_size": 16}},
    "TamingVQGAN": {"model_args": {"vocab_size": 16, "n_init": 4, "ddconfig": {
        "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 4, "resolution": 16}}},
    "CausalVideoVQ": {"data_args": {"sequence_length": 5}, "model_args": {
        "ch": 4, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
        "quantizer": {"type": "fsq", "levels": [5, 5, 5]}}},
    "FakeResidual": {"model_args": {"factors": [4, 4], "num_quantizers": 3}},
}


def tiny_config(model_type: str, **data_args):
    family = TINY[model_type]
    raw = {"model_type": model_type, **family, "data_args": {**DATA_ARGS, **family.get("data_args", {}), **data_args}}
    return raw, config_from_dict(raw)


def tiny_checkpoint(directory, model_type: str, seed: int = 0, code_prior=None, **data_args) -> str:
    """A checkpoint of an untrained tiny model, as the training loop writes it."""
    raw, config = tiny_config(model_type, **data_args)
    torch.manual_seed(seed)
    model = create_model(config)
    payload = {"steps": 0, "state_dict": model.state_dict(), "config": raw, "model_type": model_type}
    if code_prior is not None:
        payload["code_prior"] = code_prior
    os.makedirs(str(directory), exist_ok=True)
    return save_checkpoint(payload, os.path.join(str(directory), f"{model_type}_{seed}.pth.tar"))


def clip(frames=7, height=13, width=19, seed=0) -> np.ndarray:
    """A smooth moving gradient with noise: real-ish content, odd sizes by default."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    base = np.stack([(x * 9 + t * 5) % 256, (y * 11 + t * 3) % 256, (x + y) * 6 % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, size=base.shape), 0, 255).astype(np.uint8)


def still_clip(frames=24, height=32, width=32, seed=0, moving=0.1) -> np.ndarray:
    """A textured scene whose frames mostly repeat (a patch of ``moving`` of the area changes): video's redundancy."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    side = max(1, int(round(math.sqrt(moving) * min(height, width))))
    out = np.repeat(scene[None], frames, axis=0)
    for t in range(frames):
        out[t, :side, :side] = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    return out


@attrs.frozen
class FakeResidualArgs:
    factors: list[int] = attrs.field(factory=lambda: [4, 4])  # mixed-radix digits of an index
    num_quantizers: int = attrs.field(default=3, validator=positive)


class FakeResidualAdapter(BaseVqVaeAdapter):
    args_class = FakeResidualArgs

    def __init__(self, args: FakeResidualArgs, config=None):
        super().__init__(args, config)
        self.model = nn.Module()
        self.model.encoder = nn.AvgPool2d(4)
        self.model.decoder = nn.ConvTranspose2d(1, 3, 4, stride=4, bias=False)
        nn.init.ones_(self.model.decoder.weight)

    @property
    def vocab(self) -> int:
        return math.prod(self.args.factors)

    def _steps(self) -> list:
        return [2.0 / self.vocab ** (q + 1) for q in range(self.args.num_quantizers)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        rest = self.model.encoder(x.mean(1, keepdim=True))[:, 0]
        low, indices = -1.0, []
        for step in self._steps():
            index = torch.floor((rest - low) / step).clamp(0, self.vocab - 1)
            rest = rest - (low + (index + 0.5) * step)
            low = -step / 2
            indices.append(index.long())
        return torch.stack(indices, dim=1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        grey, low = torch.zeros(indices[:, 0].shape), -1.0
        for q, step in enumerate(self._steps()[: indices.shape[1]]):
            grey = grey + low + (indices[:, q].float() + 0.5) * step
            low = -step / 2
        return self.model.decoder(grey[:, None])

    def forward(self, x: torch.Tensor) -> VQOutput:
        indices = self.encode(x)
        return VQOutput(torch.zeros(()), self.decode(indices), torch.ones(()), indices)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.model.decoder.weight

    @property
    def quantizers(self) -> list:
        return []  # a hand-made lookup, no quantizer modules: its alphabet is given below

    @property
    def vocab_sizes(self) -> list:
        return [self.vocab]

    @property
    def code_factors(self) -> list:
        return [list(self.args.factors)]

    @property
    def code_depths(self) -> list:
        return [self.args.num_quantizers]

    @property
    def spatial_factor(self) -> int:
        return 4
