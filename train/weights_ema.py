"""An exponential moving average of the model's weights, used for validation and saved beside them.

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, on the device with one
fused ``lerp`` (``torch.optim.swa_utils.AveragedModel`` does the same but reads its step count
to the host on every update). Buffers (EMA codebooks, their usage statistics) are not averaged:
they are copied, so the averaged model codes with the codebook the weights were trained with.
"""
import copy

import torch
from torch import nn


class WeightsEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        averaged = list(self.model.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in model.parameters()], 1.0 - self.decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
