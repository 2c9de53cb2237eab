"""Under torchrun every rank trains on different clips, whatever the config says about shards.

Two Gloo ranks build their trainer through the real entry (``build_trainer`` joins the
process group from torchrun's environment variables and builds the training loader) on one
video, fewer files than ranks: once with the design document's explicit ``shard_id: 0,
num_shards: 1`` and once with the shards left to their defaults.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import free_port, sample_clip_path, set_rank_env, tiny_config
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer

WORLD_SIZE = 2
SAMPLES = 64
RUNS = {
    "configured": {"shard_id": 0, "num_shards": 1},  # the design document's example config
    "default": {},
}


def _rank_worker(rank: int, port: int, tmp_path) -> None:
    set_rank_env(rank, port, WORLD_SIZE)
    torch.set_num_threads(1)
    try:
        for run, shards in RUNS.items():
            data = tiny_config(tmp_path / f"rank{rank}", data_args={"sequence_length": 2, **shards},
                               train_args={"run_name": run})
            data["data_process"] = {"train": [sample_clip_path()]}
            trainer = build_trainer(config_from_dict(data))
            loader = trainer.training_loader
            located = [loader.dataset.locate(k) for k in range(SAMPLES)]
            first_batch = next(iter(loader))[0]
            trainer.log_mgr.close()
            torch.save({"located": located, "batch": first_batch}, tmp_path / f"{run}_rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_streams(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp_data")
    mp.start_processes(_rank_worker, args=(free_port(), tmp_path), nprocs=WORLD_SIZE, start_method="fork")
    return {run: [torch.load(tmp_path / f"{run}_rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
            for run in RUNS}


@pytest.mark.parametrize("run", list(RUNS))
def test_ranks_see_different_clips(rank_streams, run):
    rank0, rank1 = rank_streams[run]
    assert not torch.equal(rank0["batch"], rank1["batch"])
    clips0, clips1 = set(map(tuple, rank0["located"])), set(map(tuple, rank1["located"]))
    assert not clips0 & clips1  # each rank draws from its own half of the clip starts of the one file
    assert len(clips0) > SAMPLES // 2 and len(clips1) > SAMPLES // 2
