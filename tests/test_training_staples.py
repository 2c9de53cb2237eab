"""The staples of a tokenizer trainer: LR schedules with warm-up, gradient accumulation, an EMA of
the weights, TensorBoard; each resumes exactly."""
import glob
import json
import math
import os

import attrs
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import list_checkpoints, load_checkpoint
from core.config import TrainArgs
from metric_utils.metric_utils import psnr
from models.adapter_base import VQOutput
from models.builders import config_from_dict
from models.loaders import model_from_checkpoint
from tests.helpers import tiny_config
from train.optim import lr_factor
from train.train_custom_videos import build_trainer
from train.validation import evaluate
from train.weights_ema import WeightsEMA

QUIET = {"validation_interval": 1000, "log_interval": 1, "wandb_log_interval": 1}


def make_trainer(tmp_path, name="run", **overrides):
    data = tiny_config(tmp_path, **overrides)
    data["train_args"]["run_name"] = name
    return build_trainer(config_from_dict(data, source=f"{name}.json"))


def read_metrics(trainer) -> list:
    with open(os.path.join(trainer.files.run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


# -- learning-rate schedules ---------------------------------------------------------------------

def test_exponential_is_the_seeds_decay_every_interval():
    args = TrainArgs(lr=1.0, lr_decay=0.5, lr_decay_interval=10)
    assert [lr_factor(args, s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_warmup_then_cosine_down_to_lr_min():
    args = TrainArgs(lr=1e-3, lr_schedule="cosine", warmup_steps=4, lr_min=1e-4, num_steps=14)
    factors = [lr_factor(args, s) for s in range(15)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert factors[14] == pytest.approx(0.1) and min(factors) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))


def test_constant_with_warmup():
    args = TrainArgs(lr_schedule="constant", warmup_steps=2)
    assert [lr_factor(args, s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_the_logged_rate_follows_the_schedule(tmp_path):
    schedule = {"lr": 0.002, "lr_schedule": "cosine", "warmup_steps": 3, "lr_min": 0.0002, "num_steps": 8}
    trainer = make_trainer(tmp_path, train_args={**QUIET, **schedule})
    trainer.train()
    logged = [m["train/lr"] for m in read_metrics(trainer) if "train/lr" in m]
    args = trainer.args
    assert logged == pytest.approx([args.lr * lr_factor(args, step) for step in range(1, 9)])


# -- gradient accumulation -----------------------------------------------------------------------

def test_two_accumulated_batches_step_like_one_batch_twice_as_large(tmp_path):
    learned = {"decay": 0.0, "dead_code_threshold": 0.0}  # no EMA codebook: its statistics see batches
    small = make_trainer(tmp_path, "small", model_args=learned, data_args={"batch_size": 2},
                         train_args={"grad_accum_steps": 2, "num_steps": 1})
    large = make_trainer(tmp_path, "large", model_args=learned, data_args={"batch_size": 4},
                         train_args={"num_steps": 1})
    clips = next(iter(large.training_loader))[0]
    frames = [small._prepare(half)[0] for half in (clips[:2], clips[2:])]
    small.train_step(frames, 0)
    large.train_step(large._prepare(clips)[0], 0)
    accumulated = dict(small.model.named_parameters())  # (usage statistics see each batch: not compared)
    for key, value in large.model.named_parameters():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_accumulation_draws_grad_accum_steps_batches_per_step(tmp_path):
    trainer = make_trainer(tmp_path, train_args={"grad_accum_steps": 3, "num_steps": 2, **QUIET})
    trainer.train()
    assert trainer.training_loader.samples_seen == 2 * 3 * trainer.config.data_args.batch_size


# -- an EMA of the weights -----------------------------------------------------------------------

def test_weights_ema_is_the_exponential_average_and_copies_buffers():
    model = torch.nn.BatchNorm1d(3)
    ema = WeightsEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((3,), 0.9 * 1.0 + 0.1 * 2.0))
    assert torch.equal(ema.model.running_mean, model.running_mean)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_weights_are_validated_saved_and_loaded_for_inference(tmp_path):
    trainer = make_trainer(tmp_path, train_args={"ema_decay": 0.5, "num_steps": 4, "save_interval": 4,
                                                 "validation_interval": 4})
    assert trainer.inference_model is trainer.ema.model
    trainer.train()
    path = list_checkpoints(trainer.files.checkpoint_dir)[0]
    ckpt = load_checkpoint(path)
    raw, averaged = ckpt["state_dict"], ckpt["ema_state_dict"]
    assert raw.keys() == averaged.keys()
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw if raw[k].is_floating_point())
    model, _, _ = model_from_checkpoint(path)
    assert all(torch.equal(v, averaged[k]) for k, v in model.state_dict().items())


# -- every staple resumes exactly ----------------------------------------------------------------

STAPLES = {
    "cosine with warm-up": {"lr_schedule": "cosine", "warmup_steps": 3, "lr_min": 1e-4},
    "gradient accumulation": {"grad_accum_steps": 2},
    "EMA of the weights": {"ema_decay": 0.8},
}


@pytest.mark.parametrize("name", sorted(STAPLES))
def test_stop_and_resume_is_bit_identical(tmp_path, name):
    common = {"deterministic": True, "save_interval": 3, "validation_interval": 100, **STAPLES[name]}
    straight = make_trainer(tmp_path, "straight", train_args={**common, "num_steps": 6})
    straight.train()
    make_trainer(tmp_path, "halves", train_args={**common, "num_steps": 3}).train()
    rest = make_trainer(tmp_path, "halves", train_args={**common, "num_steps": 6, "resume": "auto"})
    assert rest.start_step == 3
    rest.train()
    assert rest.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    for a, b in ((straight.model, rest.model), (straight.inference_model, rest.inference_model)):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


# -- TensorBoard -----------------------------------------------------------------------------------

def test_tensorboard_gets_the_logged_scalars(tmp_path):
    trainer = make_trainer(tmp_path, use_tensorboard=True, train_args={"num_steps": 3, **QUIET})
    trainer.train()
    trainer.log_mgr.close()
    events = glob.glob(os.path.join(trainer.files.run_dir, "events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(events[0])
    accumulator.Reload()
    losses = accumulator.Scalars("train/loss/total")
    assert [event.step for event in losses] == [1, 2, 3]
    logged = [m["train/loss/total"] for m in read_metrics(trainer) if "train/loss/total" in m]
    assert [event.value for event in losses] == pytest.approx(logged, rel=1e-6)
    assert all(math.isfinite(event.value) for event in losses)


def test_precision_auto_is_fp32_on_the_cpu(tmp_path):
    trainer = make_trainer(tmp_path, train_args={"num_steps": 1, "precision": "auto"})
    assert trainer.precision == "fp32" and not trainer.scaler.is_enabled()
    assert attrs.fields(TrainArgs).precision.default == "auto"


# -- honest numbers ------------------------------------------------------------------------------

class Overshooting(torch.nn.Module):
    """A 'model' whose reconstruction overshoots [-1, 1] and errs more on some frames than others."""

    def forward(self, x):
        errors = torch.linspace(0.05, 0.6, x.shape[0]).view(-1, 1, 1, 1)
        recon = x * 1.8 + errors
        return VQOutput(torch.zeros(()), recon, torch.ones(()), None)


def test_validation_psnr_is_the_mean_per_frame_psnr_of_clamped_frames():
    torch.manual_seed(0)
    batches = [torch.rand(4, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1]  # a short last batch
    model = Overshooting()
    result = evaluate(model, [(b, None) for b in batches], lambda b: (b, 1, b.shape[0]), None, "fp32", "cpu")
    frames = torch.cat(batches)
    recon = torch.cat([model(b).recon for b in batches])
    expected = psnr(((recon + 1) / 2).clamp(0, 1), (frames + 1) / 2)
    assert result["val/stats/psnr"] == pytest.approx(expected, rel=1e-6)


def test_with_a_gan_under_fp16_the_scaler_updates_once_per_step(tmp_path, monkeypatch):
    gan = {"use_gan": True, "disc_start": 0, "disc_interval": 1, "use_perceptual": False, "disc_layers": 2,
           "disc_ndf": 8, "precision": "fp16", "num_steps": 3}
    trainer = make_trainer(tmp_path, train_args=gan)
    if not trainer.scaler.is_enabled():
        pytest.skip("no fp16 GradScaler on this device")
    calls = []
    original = trainer.scaler.update
    monkeypatch.setattr(trainer.scaler, "update", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    frames = trainer._prepare(next(iter(trainer.training_loader))[0])[0]
    for step in range(3):
        trainer.train_step(frames, step)
    assert len(calls) == 3
