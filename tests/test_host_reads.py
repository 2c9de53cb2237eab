"""A training step reads at most 2 values from the device on steps that do not log (issue: a GPU
step that waits on the host). Counted on the CPU by patching the read methods of torch.Tensor
while the trainer's own loop runs, for every family, with a GAN and with accumulation."""
import pytest

from models.builders import config_from_dict
from tests.helpers import merge, tiny_config
from benchmarks.host_reads import counting_host_reads
from train.train_custom_videos import build_trainer

MAX_READS_PER_STEP = 2
STEPS = 6
QUIET = {"num_steps": STEPS, "log_interval": 1000, "wandb_log_interval": 1000, "wandb_image_interval": 1000,
         "save_interval": 1000, "validation_interval": 1000}
VQVAE2 = {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 2, "n_init": 8, "vocab_size": 16}
TAMING = {"vocab_size": 16, "n_init": 8,
          "ddconfig": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 8,
                       "resolution": 32},
          "lossconfig": {"disc_start": 0, "disc_num_layers": 2, "disc_ndf": 8, "perceptual_weight": 0.0}}
CAUSAL_VIDEO = {"ch": 4, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
                "quantizer": {"type": "fsq", "levels": [5, 5, 5]}}
GAN = {"use_gan": True, "disc_start": 0, "disc_interval": 1, "use_perceptual": False, "disc_layers": 2, "disc_ndf": 8}
RUNS = {
    "VqVae2 (EMA codebook)": {},
    "VqVae2 (learned codebook)": {"model_args": {"decay": 0.0}},
    "VqVae2 + GAN, 2 accumulated batches": {"train_args": {**GAN, "grad_accum_steps": 2}},
    "VQVAE2": {"model_type": "VQVAE2", "scaling_rates": [2, 2], "model_args": VQVAE2},
    "VQVAE2_OptVQ": {"model_type": "VQVAE2_OptVQ", "scaling_rates": [2, 2], "model_args": VQVAE2},
    "TamingVQGAN": {"model_type": "TamingVQGAN", "model_args": TAMING, "train_args": {"use_gan": True}},
    "EMAVQ": {"model_type": "EMAVQ", "model_args": TAMING},
    "CausalVideoVQ": {"model_type": "CausalVideoVQ", "model_args": CAUSAL_VIDEO},
}


def quiet_trainer(tmp_path, run: dict):
    data = tiny_config(tmp_path, train_args={**QUIET, "perceptual_backbone": "random"})
    data["data_process"]["vaild"] = None  # no validation pass: it reads metrics, by design
    if "model_type" in run:
        data["model_args"] = {}
    return build_trainer(config_from_dict(merge(data, run)))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_step_reads_at_most_two_values_from_the_device(tmp_path, name):
    trainer = quiet_trainer(tmp_path, RUNS[name])
    with counting_host_reads() as reads:
        reads.active = False
        original_step = trainer.train_step

        def counted_step(images, step):
            reads.active = step < STEPS - 1  # the last step logs and saves
            try:
                return original_step(images, step)
            finally:
                reads.active = False

        trainer.train_step = counted_step
        trainer.train()
    steps = STEPS - 1
    assert reads.total <= MAX_READS_PER_STEP * steps, f"{reads.total / steps:.1f} reads per step: {dict(reads.counts)}"
