"""Two Gloo ranks quantize different halves of each batch and must keep identical codebooks,
also through dead-code restarts (statistics all-reduced, replacement vectors from rank 0)."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.quantizers import FamilySettings, QuantizerSpec, build_quantizer

WORLD_SIZE = 2
STEPS = 6
SPECS = {"vq": QuantizerSpec("vq"), "ema": QuantizerSpec("ema"), "ema_kmeans": QuantizerSpec("ema", kmeans_init=True),
         "sinkhorn": QuantizerSpec("sinkhorn", dead_code_threshold=1.0)}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    try:
        results = {}
        for name, spec in SPECS.items():
            torch.manual_seed(rank)  # each rank's own data and random draws
            quantizer = build_quantizer(spec, 4, 16, FamilySettings(dead_code_threshold=1.0)).train()
            for tensor in quantizer.state_dict().values():  # what wrapping in DDP does: rank 0's start
                dist.broadcast(tensor, 0)
            restarts = 0.0
            for step in range(STEPS):
                # clustered vectors far from most codes: plenty of dead codes to restart
                z = torch.randn(2, 4, 4, 4) * 0.1 + torch.randn(2, 4, 1, 1) * (3 + step)
                z.requires_grad_(True)
                result = quantizer(z)
                (result.quantized.sum() + result.loss).backward()
                restarts += float(result.stats.get("restarts", 0.0))
                if any(p.grad is not None for p in quantizer.parameters()):  # as DDP would: one averaged gradient
                    with torch.no_grad():
                        for p in quantizer.parameters():
                            if p.grad is not None:
                                dist.all_reduce(p.grad)
                                p -= 0.1 * p.grad / WORLD_SIZE
                                p.grad = None
            results[name] = {"state": quantizer.state_dict(), "restarts": restarts}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_on_both_ranks_through_restarts(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    for name in SPECS:
        first, second = (ranks[rank][name] for rank in range(WORLD_SIZE))
        assert first["restarts"] > 0, f"{name}: no restarts, the test has no teeth"
        assert first["restarts"] == second["restarts"]
        for key, value in first["state"].items():
            assert torch.equal(value, second["state"][key]), f"{name}: {key} differs between ranks"
