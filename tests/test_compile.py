"""``compile: true`` trains every family like eager mode does (a few steps, same losses).

The tests compile with the ``aot_eager`` backend: the same graph capture and autograd
tracing as the default ``inductor`` backend, without generating and building C++ code,
which takes minutes per model on a CPU.
"""
import pytest

from models.builders import config_from_dict
from tests.helpers import merge, tiny_config
from tests.test_host_reads import RUNS
from train.train_custom_videos import build_trainer

FAMILIES = ["VqVae2 (EMA codebook)", "VQVAE2", "VQVAE2_OptVQ", "TamingVQGAN", "EMAVQ", "CausalVideoVQ"]
STEPS = 3


def losses(tmp_path, name: str, compiled: bool) -> list:
    data = tiny_config(tmp_path, train_args={"num_steps": STEPS, "validation_interval": 1000,
                                             "perceptual_backbone": "random", "deterministic": True,
                                             "compile": compiled, "compile_backend": "aot_eager",
                                             "run_name": f"{name}-{compiled}"})
    run = RUNS[name]
    if "model_type" in run:
        data["model_args"] = {}
    trainer = build_trainer(config_from_dict(merge(data, run)))
    frames = trainer._prepare(next(iter(trainer.training_loader))[0])[0]
    return [float(trainer.train_step(frames, step)["total_loss"]) for step in range(STEPS)]


@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_steps_match_eager_steps(tmp_path, name):
    eager = losses(tmp_path, name, compiled=False)
    assert losses(tmp_path, name, compiled=True) == pytest.approx(eager, rel=1e-4, abs=1e-6)
