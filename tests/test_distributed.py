"""DistributedDataParallel on the CPU: two Gloo ranks train a tiny EMA model as one process would.

Each rank trains through the real entry (``build_trainer`` joins the process group from
torchrun's environment variables, wraps the model in DDP, then ``train()``), fed its half
of fixed global batches. With mean-reduced losses and no BatchNorm, DDP's averaged
gradient is the full batch's gradient, and the EMA codebook statistics are all-reduced
as sums, so both ranks must end where one process on the full batches ends.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import free_port, merge, sample_clip_path, set_rank_env, tiny_config
from core.checkpoint import list_checkpoints
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer
from data_utils.datasets import VideoDataset

WORLD_SIZE = 2
STEPS = 3
CLIPS_PER_RANK = 2
SEQUENCE_LENGTH = 2
SIZE = 32

# Restarts off: their replacement vectors are drawn from a batch, which differs between
# one rank's half and the full batch, so only the EMA path can match the single process.
EQUAL_RUN = {"model_args": {"dead_code_threshold": 0.0}}
# Codes initialised from rank 0's batch, many more than a batch uses, so the unused ones are
# restarted: the broadcasts that keep the ranks' codebooks identical.
RESTART_THRESHOLD = 64.0
RESTART_RUN = {"model_args": {"dead_code_threshold": RESTART_THRESHOLD, "vocab_size": 512}}


class FixedBatches:
    """A training stream of given uint8 batches ``(b, d, h, w, c)``, one per step."""

    def __init__(self, batches: list):
        self.batches = batches
        self.samples_seen = 0

    def seek(self, sample: int) -> None:
        self.samples_seen = sample

    def __iter__(self):
        for clips in self.batches:
            self.samples_seen += len(clips)
            yield clips, ["fixed"] * len(clips)


def run_config(tmp_path, run: str, overrides: dict, folder: str) -> dict:
    data = tiny_config(tmp_path, **merge(overrides, {
        "data_args": {"batch_size": CLIPS_PER_RANK, "sequence_length": SEQUENCE_LENGTH,
                      "resolution": [SIZE, SIZE]},
        "train_args": {"num_steps": STEPS, "save_interval": 1000, "validation_interval": 1000,
                       "folder_name": folder, "run_name": run},
    }))
    # Two files, so the default sharding (rank r of 2 takes files r, r+2, ...) leaves none empty.
    clip = sample_clip_path()
    data["data_process"]["train"] = [clip, clip]
    return data


def train_run(data: dict, batches: list, seeded_codebook: bool = False) -> dict:
    """Train through ``build_trainer`` on ``batches``; the model's initial and final states.

    EMA codes start as vectors of the first batch, under DDP of rank 0's half; with
    ``seeded_codebook`` they start from the seeded random codebook instead, the same in
    every process, so a DDP run can be compared with one process step by step.
    """
    trainer = build_trainer(config_from_dict(data))
    trainer.training_loader = FixedBatches(batches)
    if seeded_codebook:
        for name, buffer in trainer.model.named_buffers():
            if name.endswith("initialized"):
                buffer.fill_(True)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.train()
    finally:
        trainer.log_mgr.close()
    return {
        "initial": initial,
        "state": trainer.model.state_dict(),
        "world_size": trainer.world_size,
        "ddp": isinstance(trainer.forward_model, torch.nn.parallel.DistributedDataParallel),
    }


def _rank_worker(rank: int, port: int, tmp_path, global_batches: list) -> None:
    set_rank_env(rank, port, WORLD_SIZE)
    torch.set_num_threads(1)
    mine = [clips.chunk(WORLD_SIZE)[rank] for clips in global_batches]
    try:
        for run, overrides in (("equal", EQUAL_RUN), ("restart", RESTART_RUN)):
            data = run_config(tmp_path, run, overrides, str(tmp_path / f"rank{rank}"))
            torch.save(train_run(data, mine, seeded_codebook=run == "equal"), tmp_path / f"{run}_rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def global_batches():
    """``STEPS`` global batches of real clips, ``WORLD_SIZE * CLIPS_PER_RANK`` clips each."""
    dataset = VideoDataset([sample_clip_path()], SEQUENCE_LENGTH, (SIZE, SIZE), seed=3)
    per_step = WORLD_SIZE * CLIPS_PER_RANK
    clips = [dataset[k][0] for k in range(STEPS * per_step)]
    return [torch.stack(clips[s * per_step:(s + 1) * per_step]) for s in range(STEPS)]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, global_batches):
    tmp_path = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_rank_worker, args=(free_port(), tmp_path, global_batches), nprocs=WORLD_SIZE,
                       start_method="fork")
    runs = {run: [torch.load(tmp_path / f"{run}_rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
            for run in ("equal", "restart")}
    return tmp_path, runs


def test_ranks_train_under_ddp_and_end_identical(ddp_runs):
    _, runs = ddp_runs
    for run in ("equal", "restart"):
        rank0, rank1 = runs[run]
        assert rank0["ddp"] and rank0["world_size"] == WORLD_SIZE
        assert rank0["state"].keys() == rank1["state"].keys()
        for key, value in rank0["state"].items():
            assert torch.equal(value, rank1["state"][key]), f"{run}: {key} differs between ranks"


def test_dead_code_restarts_happen_under_ddp(ddp_runs):
    _, runs = ddp_runs
    state = runs["restart"][0]["state"]
    usages = [value for key, value in state.items() if key.endswith("usage")]
    # a restarted code's usage is reset to the expected share (1) and decays by 1% a step; codes
    # that were never restarted start at the dead line (0.1): restarts ran, and the test above
    # saw both ranks agree on the codebook they produced
    assert usages and any((usage > 0.95).any() for usage in usages)


def test_two_ranks_equal_one_process_on_the_global_batch(ddp_runs, tmp_path, global_batches):
    _, runs = ddp_runs
    single = train_run(run_config(tmp_path, "equal", EQUAL_RUN, str(tmp_path / "single")), global_batches,
                       seeded_codebook=True)
    assert not single["ddp"] and single["world_size"] == 1
    rank0 = runs["equal"][0]
    moved = 0
    for key, value in single["state"].items():
        assert torch.equal(rank0["initial"][key], single["initial"][key]), f"{key}: the runs start apart"
        torch.testing.assert_close(rank0["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        moved += not torch.equal(value, single["initial"][key])
    assert moved > len(single["state"]) // 2  # training changed most tensors: the comparison has teeth


def test_only_rank_zero_writes_logs_and_checkpoints(ddp_runs):
    tmp_path, _ = ddp_runs
    for run in ("equal", "restart"):
        run_dir = tmp_path / "rank0" / run
        assert list_checkpoints(str(run_dir / "checkpoints"))
        log = next(run_dir.glob("training_*.log")).read_text()
        assert f"on {WORLD_SIZE} process(es): effective batch {WORLD_SIZE * CLIPS_PER_RANK} clips" in log
    written = [p for p in (tmp_path / "rank1").rglob("*") if p.is_file()]
    assert written == []
