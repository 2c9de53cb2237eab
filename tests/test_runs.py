"""Runs do not mix: one run per folder, the wandb id travels in the checkpoint, each step logged once."""
import json
import logging
import os

import pytest

from tests.helpers import merge, tiny_config, write_config
from tests.test_config import DESIGN_DOC_EXAMPLE
from core.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint
from log_utils.log_utils import LogManager, rewind_metrics
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer, main


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def train(tmp_path, name="run", **overrides):
    data = tiny_config(tmp_path, **overrides)
    data["train_args"].setdefault("run_name", name)
    trainer = build_trainer(config_from_dict(data, source=f"{name}.json"))
    try:
        trainer.train()
    finally:
        trainer.log_mgr.close()
    return trainer


def test_rerunning_a_config_without_resume_is_refused_in_one_line_and_the_first_run_stays(tmp_path, caplog):
    data = tiny_config(tmp_path, train_args={"num_steps": 4, "save_interval": 2, "keep_last": 1,
                                             "validation_interval": 100, "wandb_log_interval": 1})
    path = write_config(tmp_path, data, "again.json")
    assert main(["--config", path]) == 0
    run_dir = os.path.join(data["train_args"]["folder_name"], "again")
    before = {name: os.path.getmtime(os.path.join(run_dir, "checkpoints", name))
              for name in os.listdir(os.path.join(run_dir, "checkpoints"))}
    metrics = read_metrics(run_dir)
    caplog.clear()
    assert main(["--config", path]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert run_dir in errors[0] and "train_args.resume" in errors[0] and "train_args.run_name" in errors[0]
    after = {name: os.path.getmtime(os.path.join(run_dir, "checkpoints", name))
             for name in os.listdir(os.path.join(run_dir, "checkpoints"))}
    assert after == before and read_metrics(run_dir) == metrics
    # what `make train` does the second time: --resume finds the run finished and trains nothing
    assert main(["--config", path, "--resume"]) == 0
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == sorted(before)
    assert read_metrics(run_dir) == metrics


def test_resuming_an_older_checkpoint_never_deletes_the_file_it_just_wrote(tmp_path):
    first = train(tmp_path, train_args={"num_steps": 6, "save_interval": 2, "keep_last": 2,
                                        "validation_interval": 100})
    folder = first.files.checkpoint_dir

    def step_files():
        return sorted(os.path.basename(p) for p in list_checkpoints(folder))

    assert step_files() == [checkpoint_name(4), checkpoint_name(6)]
    older = os.path.join(folder, checkpoint_name(4))
    resumed = train(tmp_path, train_args={"num_steps": 5, "save_interval": 1, "keep_last": 1,
                                          "validation_interval": 100, "checkpoint_path": older})
    assert resumed.files.last_checkpoint.endswith(checkpoint_name(5)) and os.path.isfile(resumed.files.last_checkpoint)
    # step 6 belongs to the branch the resume left: not this run's to prune
    assert step_files() == [checkpoint_name(5), checkpoint_name(6)]


def test_run_name_cannot_lead_out_of_folder_name(tmp_path):
    data = tiny_config(tmp_path, train_args={"run_name": "../.."})
    assert main(["--config", write_config(tmp_path, data)]) == 2
    assert not os.path.exists(tmp_path / "metrics.jsonl") and not os.path.exists(tmp_path / "checkpoints")


@pytest.fixture
def wandb_ids(monkeypatch):
    started = []
    monkeypatch.setattr(LogManager, "_start_wandb", lambda self, project, config, run_id, folder: started.append(run_id))
    return started


def test_the_wandb_id_is_stored_in_the_checkpoint_and_reused_only_when_resuming_from_it(tmp_path, wandb_ids):
    args = {"num_steps": 2, "save_interval": 2, "validation_interval": 100}
    first = train(tmp_path, use_wandb=True, train_args=args)
    assert load_checkpoint(first.files.last_checkpoint)["run_id"] == wandb_ids[0]
    train(tmp_path, use_wandb=True, train_args={**args, "num_steps": 4, "resume": "auto"})
    assert wandb_ids[1] == wandb_ids[0]
    train(tmp_path / "elsewhere", use_wandb=True, train_args=args)  # the same config, a new run
    assert len(wandb_ids) == 3 and wandb_ids[2] != wandb_ids[0]


def test_metrics_jsonl_holds_each_step_once_after_a_resume(tmp_path):
    args = {"num_steps": 4, "save_interval": 2, "keep_last": 5, "validation_interval": 2, "wandb_log_interval": 1}
    first = train(tmp_path, train_args=args)
    at_two = os.path.join(first.files.checkpoint_dir, checkpoint_name(2))
    train(tmp_path, train_args={**args, "checkpoint_path": at_two})  # as after a kill just past step 2
    records = read_metrics(first.files.run_dir)
    train_steps = [r["step"] for r in records if "train/loss/total" in r]
    val_steps = [r["step"] for r in records if "val/stats/psnr" in r]
    assert train_steps == [1, 2, 3, 4]
    assert val_steps == [0, 2, 4]


def test_rewinding_metrics_drops_later_steps_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "train/loss": 1}, {"step": 2, "train/loss": 1}, {"step": 2, "val/psnr": 3},
             {"step": 3, "train/loss": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "tra')
    assert rewind_metrics(str(path), 2) == 3
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines[:2]


def test_the_design_documents_example_config_trains(tmp_path, caplog):
    """The example's shape (family, images, levels, GAN, data keys); widths cut down to keep the test short."""
    data = merge(DESIGN_DOC_EXAMPLE, {
        "model_args": {"n_hid": 16, "vocab_size": 64, "n_init": 16},
        "data_args": {"num_threads": 0, "resolution": 32, "sequence_length": 2},
        "train_args": {"num_steps": 2, "folder_name": str(tmp_path / "save_data"), "device": "cpu",
                       "perceptual_backbone": "random", "progress_bar": False, "fit_prior": False,
                       "compute_fid": False, "compute_lpips": False},
    })
    with caplog.at_level(logging.WARNING):
        assert main(["--config", write_config(tmp_path, data, "example.json")]) == 0
    assert list_checkpoints(os.path.join(tmp_path, "save_data", "example", "checkpoints"))


def test_step_zero_validation_writes_the_best_checkpoints(tmp_path):
    trainer = train(tmp_path, train_args={"num_steps": 1, "validation_interval": 100, "save_interval": 100})
    for name in ("best_psnr.pth.tar", "best_loss.pth.tar"):
        os.remove(os.path.join(trainer.files.checkpoint_dir, name))
    trainer.files.best = {}
    assert "val/stats/psnr" in trainer.files.save_best({"val/stats/psnr": 20.0, "val/loss/total": 1.0}, 0,
                                                      lambda: trainer.training_state(0))
    assert load_checkpoint(os.path.join(trainer.files.checkpoint_dir, "best_psnr.pth.tar"))["steps"] == 0


@pytest.mark.parametrize("scale_lr, factor", [(False, 1), (True, 2)])  # batch 2, one process
def test_scale_lr_multiplies_the_base_rate_by_batch_and_processes_as_upstream_taming(tmp_path, scale_lr, factor):
    taming = {"model_type": "TamingVQGAN",
              "model_args": {"vocab_size": 16, "n_init": 8,
                             "ddconfig": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                                          "z_channels": 8, "resolution": 32}}}
    data = tiny_config(tmp_path, **taming, train_args={"lr": 4.5e-6, "scale_lr": scale_lr, "use_gan": True,
                                                       "perceptual_backbone": "random"})
    data["model_args"] = taming["model_args"]
    trainer = build_trainer(config_from_dict(data, source="taming.json"))
    trainer.log_mgr.close()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(4.5e-6 * factor)
    disc = trainer.optimizer_disc
    assert disc.param_groups[0]["lr"] == pytest.approx(4.5e-6 * factor)
