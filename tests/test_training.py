"""The training loop end to end on real frames: learning, checkpoints, exact resume, numerics."""
import json
import os

import pytest
import torch

from tests.helpers import tiny_config
from core.checkpoint import list_checkpoints, load_checkpoint
from models.builders import config_from_dict
from models.architecture import checkpoint_bytes
from models.loaders import model_from_checkpoint
from train.train_custom_videos import build_trainer
from train.trainer import TrainingDiverged


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def make_trainer(tmp_path, name="run", **overrides):
    data = tiny_config(tmp_path, **overrides)
    data["train_args"]["run_name"] = name
    return build_trainer(config_from_dict(data, source=f"{name}.json"))


def test_twenty_steps_lower_the_loss_and_write_the_run_folder(tmp_path):
    trainer = make_trainer(tmp_path, train_args={"num_steps": 20, "wandb_log_interval": 1, "lr": 0.003})
    summary = trainer.train()
    assert summary["status"] == "finished" and summary["steps"] == 20
    losses = [m["train/loss/total"] for m in read_metrics(trainer.files.run_dir) if "train/loss/total" in m]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    val = [m for m in read_metrics(trainer.files.run_dir) if "val/stats/psnr" in m]
    assert len(val) == 3  # steps 0, 10, 20
    pictures = os.listdir(os.path.join(trainer.files.run_dir, "images"))  # a grid at every validation
    assert {"val_step0000000.png", "val_step0000010.png", "val_step0000020.png"} <= set(pictures)
    assert val[-1]["val/stats/psnr"] > val[0]["val/stats/psnr"]
    names = os.listdir(os.path.join(trainer.files.run_dir, "checkpoints"))
    assert "checkpoint_step00000020.pth.tar" in names and "best_psnr.pth.tar" in names
    saved = json.load(open(os.path.join(trainer.files.run_dir, "run_summary.json")))
    assert saved["last_checkpoint"].endswith("checkpoint_step00000020.pth.tar")


def test_resume_continues_at_the_saved_step_with_identical_optimizer_state(tmp_path):
    first = make_trainer(tmp_path, train_args={"num_steps": 10, "validation_interval": 100})
    first.train()
    ckpt_path = list_checkpoints(os.path.join(first.files.run_dir, "checkpoints"))[0]
    resumed = make_trainer(tmp_path, name="again",
                           train_args={"num_steps": 12, "checkpoint_path": ckpt_path, "validation_interval": 100})
    assert resumed.start_step == 10
    saved = load_checkpoint(ckpt_path)["optimizer"]
    now = resumed.optimizer.state_dict()
    for key, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(now["state"][key][name]))
    assert resumed.train()["steps"] == 12


def test_stop_and_resume_is_bit_identical_to_a_straight_run(tmp_path):
    common = {"deterministic": True, "save_interval": 6, "validation_interval": 4, "lr_decay_interval": 5,
              "lr_decay": 0.9}
    straight = make_trainer(tmp_path, name="straight", train_args={**common, "num_steps": 12})
    straight.train()
    half = make_trainer(tmp_path, name="halves", train_args={**common, "num_steps": 6})
    half.train()
    rest = make_trainer(tmp_path, name="halves", train_args={**common, "num_steps": 12, "resume": "auto"})
    assert rest.start_step == 6
    rest.train()
    a, b = straight.model.state_dict(), rest.model.state_dict()
    assert a.keys() == b.keys()
    diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a]
    assert max(diffs) == 0.0


def test_nonfinite_steps_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, train_args={"num_steps": 30, "save_interval": 4, "max_nonfinite_steps": 3,
                                                 "validation_interval": 100})
    original = trainer.loss_calculator.compute_total_loss
    calls = {"n": 0}

    def sometimes_nan(images, recon, vq_loss, step, optimizer_idx=0):
        calls["n"] += 1
        out = original(images, recon, vq_loss, step, optimizer_idx)
        if calls["n"] in (3, 4) or calls["n"] >= 9:  # two isolated NaNs, then NaN forever
            out["total_loss"] = out["total_loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.loss_calculator, "compute_total_loss", sometimes_nan)
    with pytest.raises(TrainingDiverged, match="Last good checkpoint"):
        trainer.train()
    assert trainer.nonfinite_skipped == 2 + 3
    good = list_checkpoints(os.path.join(trainer.files.run_dir, "checkpoints"))[0]
    state = load_checkpoint(good)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    summary = json.load(open(os.path.join(trainer.files.run_dir, "run_summary.json")))
    assert summary["status"] == "failed"


def test_checkpoint_of_another_model_is_refused_naming_both(tmp_path):
    first = make_trainer(tmp_path, train_args={"num_steps": 2, "validation_interval": 100, "save_interval": 2})
    first.train()
    ckpt = list_checkpoints(os.path.join(first.files.run_dir, "checkpoints"))[0]
    from core.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"shape mismatches"):
        make_trainer(tmp_path, name="wider", model_args={"vocab_size": 64}, train_args={"checkpoint_path": ckpt})
    other = {"model_type": "VQVAE2", "scaling_rates": [2, 2],
             "model_args": {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 2, "n_init": 8,
                            "vocab_size": 16}}
    data = tiny_config(tmp_path, **other, train_args={"checkpoint_path": ckpt})
    data["model_args"] = other["model_args"]
    with pytest.raises(CheckpointError, match=r"is a 'VqVae2' model, the config asks for 'VQVAE2'"):
        build_trainer(config_from_dict(data))


def test_best_checkpoints_appear_only_when_a_metric_improves(tmp_path):
    trainer = make_trainer(tmp_path, train_args={"num_steps": 1})
    folder = trainer.files.checkpoint_dir
    assert set(trainer.files.save_best({"val/stats/psnr": 20.0, "val/loss/total": 0.5}, 5, lambda: trainer.training_state(5))) == {
        "val/stats/psnr", "val/loss/total"}
    assert sorted(os.listdir(folder)) == ["best_loss.pth.tar", "best_psnr.pth.tar"]
    stamp = os.path.getmtime(os.path.join(folder, "best_psnr.pth.tar"))
    improved = trainer.files.save_best({"val/stats/psnr": 19.0, "val/loss/total": 0.4, "val/stats/lpips": 0.3}, 6,
                                       lambda: trainer.training_state(6))
    assert set(improved) == {"val/loss/total", "val/stats/lpips"}
    assert os.path.getmtime(os.path.join(folder, "best_psnr.pth.tar")) == stamp
    assert load_checkpoint(os.path.join(folder, "best_psnr.pth.tar"))["steps"] == 5
    assert load_checkpoint(os.path.join(folder, "best_loss.pth.tar"))["steps"] == 6
    assert sorted(os.listdir(folder)) == ["best_loss.pth.tar", "best_lpips.pth.tar", "best_psnr.pth.tar"]


def test_image_mode_trains_on_the_builtin_photos(tmp_path):
    trainer = make_trainer(tmp_path, name="images", use_images=True,
                           data_process={"train": "builtin:train", "vaild": "builtin:valid"},
                           train_args={"num_steps": 6, "validation_interval": 6, "wandb_log_interval": 1})
    assert trainer.train()["status"] == "finished"
    val = [m for m in read_metrics(trainer.files.run_dir) if "val/stats/psnr" in m]
    assert len(val) == 2 and "val/stats/temporal" not in val[-1]
    assert val[-1]["val/stats/psnr"] > val[0]["val/stats/psnr"]


def test_init_from_loads_weights_but_starts_a_fresh_run(tmp_path):
    first = make_trainer(tmp_path, train_args={"num_steps": 3, "validation_interval": 100, "save_interval": 3})
    first.train()
    ckpt = list_checkpoints(os.path.join(first.files.run_dir, "checkpoints"))[0]
    second = make_trainer(tmp_path, name="finetune", train_args={"init_from": ckpt, "num_steps": 3})
    assert second.start_step == 0
    saved = load_checkpoint(ckpt)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in second.model.state_dict().items())


def test_best_files_hold_weights_and_config_and_only_step_checkpoints_can_resume_the_optimizers(tmp_path):
    gan = {"use_gan": True, "use_perceptual": False, "disc_start": 0, "disc_layers": 1, "disc_ndf": 8,
           "num_steps": 4, "validation_interval": 2, "save_interval": 4}
    trainer = make_trainer(tmp_path, train_args=gan)
    trainer.train()
    folder = trainer.files.checkpoint_dir
    step = load_checkpoint(os.path.join(folder, "checkpoint_step00000004.pth.tar"))
    best = load_checkpoint(os.path.join(folder, "best_loss.pth.tar"))
    assert {"optimizer", "optimizer_disc", "disc_state_dict", "scheduler", "rng"} <= set(step)
    assert not {"optimizer", "optimizer_disc", "disc_state_dict", "scheduler", "scaler", "rng"} & set(best)
    assert {"steps", "state_dict", "config", "model_type"} <= set(best)
    assert os.path.getsize(os.path.join(folder, "best_loss.pth.tar")) < 0.6 * os.path.getsize(
        os.path.join(folder, "checkpoint_step00000004.pth.tar"))
    estimate = checkpoint_bytes(trainer.model, [trainer.loss_calculator.discriminator])  # the start-up line's
    for kind, name in (("weights", "best_loss.pth.tar"), ("resumable", "checkpoint_step00000004.pth.tar")):
        assert abs(os.path.getsize(os.path.join(folder, name)) - estimate[kind]) < 0.1 * estimate[kind] + 2**15
    model, _config, _ckpt = model_from_checkpoint(os.path.join(folder, "best_loss.pth.tar"))  # inference
    assert all(torch.equal(best["state_dict"][k], v) for k, v in model.state_dict().items())
    tuned = make_trainer(tmp_path, name="tuned", train_args={"init_from": os.path.join(folder, "best_loss.pth.tar")})
    assert all(torch.equal(best["state_dict"][k], v) for k, v in tuned.model.state_dict().items())
