"""Training logs that stay on the device: summed every step, read once per logging interval.

Reading a tensor to the host (``.item()``, ``float(t)``) waits for all queued device work;
a step that reads its losses every time keeps the GPU idle while Python catches up. The
sums are read in one transfer when a log line is due, and reported as means over the
steps since the last read, so no step is lost from the logs.
"""
import torch


class RunningLogs:
    """Sums of named scalars (0-dim tensors or Python numbers) since the last ``means()``."""

    def __init__(self):
        self._sums: dict = {}
        self.steps = 0

    def add(self, logs: dict) -> None:
        for key, value in logs.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self.steps += 1

    def means(self) -> dict:
        """Means since the last call (one device-to-host transfer for all tensors), then reset."""
        if not self.steps:
            return {}
        tensors = {k: v for k, v in self._sums.items() if isinstance(v, torch.Tensor)}
        values = dict(zip(tensors, torch.stack(list(tensors.values())).tolist())) if tensors else {}
        values.update({k: v for k, v in self._sums.items() if k not in tensors})
        means = {k: v / self.steps for k, v in values.items()}
        self._sums, self.steps = {}, 0
        return means
