"""Which GPUs there are, and the scheduler slots a multitask config makes of them."""
import os

from multitask.scheduler import Slot
from multitask.settings import MultitaskConfig


def visible_gpus() -> list:
    """The GPUs this process may use, named as ``CUDA_VISIBLE_DEVICES`` names them.

    ``torch.cuda.device_count`` counts without creating a CUDA context, so the
    launcher stays light; when ``CUDA_VISIBLE_DEVICES`` is already set, its entries
    (not 0..n-1) are what a child must be given.
    """
    import torch  # late: only the launcher's GPU questions need it

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in listed.split(",") if name.strip()][:count]


def make_slots(config: MultitaskConfig) -> list:
    """``tasks_per_gpu`` slots on each GPU, or ``cpu_concurrency`` CPU slots without one.

    GPU slots are interleaved (0, 1, 0, 1, ...) so the first tasks spread over every GPU.
    A GPU task sees only its GPU, as ``cuda:0``. CPU tasks see no GPU and share the
    cores, unless ``OMP_NUM_THREADS`` is already set.
    """
    gpus = visible_gpus() if config.gpus == "auto" else [str(g) for g in config.gpus]
    if gpus:
        return [
            Slot(f"cuda:{gpu}", "cuda:0", {"CUDA_VISIBLE_DEVICES": gpu})
            for _ in range(config.tasks_per_gpu)
            for gpu in gpus
        ]
    env = {"CUDA_VISIBLE_DEVICES": ""}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // config.cpu_concurrency))
    return [Slot("cpu", "cpu", env) for _ in range(config.cpu_concurrency)]
