"""Every family resumes exactly: 2N steps straight equal N steps, a resume and N more (issue: Taming's
code usage was not saved, so every tensor differed after a resume)."""
import pytest
import torch

from models.builders import config_from_dict
from tests.helpers import merge, tiny_config
from tests.test_host_reads import RUNS
from train.train_custom_videos import build_trainer

STEPS = 3
COMMON = {"deterministic": True, "save_interval": STEPS, "validation_interval": 100, "log_interval": 1,
          "perceptual_backbone": "random", "disc_start": 1}


def trainer(tmp_path, run: dict, name: str, num_steps: int, **train_args):
    data = tiny_config(tmp_path, train_args={**COMMON, "num_steps": num_steps, "run_name": name, **train_args})
    data["data_process"]["vaild"] = None
    if "model_type" in run:
        data["model_args"] = {}
    return build_trainer(config_from_dict(merge(data, run), source=f"{name}.json"))


def final_state(trainer_) -> dict:
    trainer_.train()
    trainer_.log_mgr.close()
    state = dict(trainer_.model.state_dict())
    discriminator = trainer_.loss_calculator.discriminator
    if discriminator is not None:
        state.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
    return state


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_family_resumes_bit_exactly(tmp_path, name):
    run = RUNS[name]
    straight = final_state(trainer(tmp_path, run, "straight", 2 * STEPS))
    final_state(trainer(tmp_path, run, "halves", STEPS))
    resumed = trainer(tmp_path, run, "halves", 2 * STEPS, resume="auto")
    assert resumed.start_step == STEPS
    after = final_state(resumed)
    assert straight.keys() == after.keys()
    differing = [k for k in straight if not torch.equal(straight[k], after[k])]
    assert not differing, differing
