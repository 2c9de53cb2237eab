"""Count device-to-host reads: the calls that make the host wait for the device's queued work."""
import collections
import contextlib

import torch

READS = ("item", "__float__", "__bool__", "__int__", "tolist")


class HostReads:
    """Counts calls of ``torch.Tensor.item/__float__/__bool__/__int__/tolist`` while ``active``."""

    def __init__(self):
        self.counts = collections.Counter()
        self.active = True

    @contextlib.contextmanager
    def paused(self):
        previous, self.active = self.active, False
        try:
            yield
        finally:
            self.active = previous

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def counting_host_reads():
    """Patch the read methods of ``torch.Tensor`` for the block; yields the ``HostReads`` counter."""
    reads = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(name, original):
        def method(self, *args, **kwargs):
            if reads.active:
                reads.counts[name] += 1
            return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
