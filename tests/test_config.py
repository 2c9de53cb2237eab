"""Config loading: typed objects, and one clear ConfigError per bad value."""
import json

import pytest

from tests.helpers import TINY, merge, tiny_config, write_config
from core.config import ConfigError
from models.builders import config_from_dict, load_config
from train.train_utils import get_train_args_from_config


def test_default_param_json_loads():
    config = load_config("param.json")
    assert config.model_type == "VqVae2"
    assert config.data_args.sequence_length == 4
    assert config.data_process.train == "builtin:train"
    assert config.run_dir.endswith("param")
    assert get_train_args_from_config("param.json").num_steps == config.train_args.num_steps


def test_valid_spelling_accepted_as_well_as_vaild():
    config = config_from_dict(merge(TINY, {"data_process": {"train": "builtin:train", "valid": "builtin:valid"}}))
    assert config.data_process.vaild == "builtin:valid"


BAD = [
    ({"model_type": "VqVea"}, "model_type", "did you mean 'VqVae'"),
    ({"data_args": {"batch_sise": 2}}, "data_args.batch_sise", "did you mean 'batch_size'"),
    ({"data_args": {"batch_size": 0}}, "data_args.batch_size", "> 0"),
    ({"data_args": {"batch_size": "2"}}, "data_args.batch_size", "an integer"),
    ({"train_args": {"lr": -0.1}}, "train_args.lr", "> 0"),
    ({"train_args": {"precision": "fp8"}}, "train_args.precision", "'bf16'"),
    ({"train_args": {"use_gan": "yes"}}, "train_args.use_gan", "true or false"),
    ({"model_args": {"n_init": 50}}, "model_args", "n_init = 50"),
    ({"model_args": {"vocab": 16}}, "model_args.vocab", "did you mean 'vocab_size'"),
    ({"data_args": {"resolution": [31, 32]}}, "data_args.resolution", "multiples of"),
    ({"data_args": {"resolution": [32]}}, "data_args.resolution", "[height, width]"),
    ({"data_args": {"shard_id": 2, "num_shards": 2}}, "data_args.shard_id", "< num_shards"),
    ({"use_images": 1}, "use_images", "true or false"),
    ({"train_args": {"num_steps": 1.5}}, "train_args.num_steps", "an integer"),
    ({"train_args": []}, "train_args", "an object"),
    ({"trian_args": {}}, "trian_args", "did you mean 'train_args'"),
]


@pytest.mark.parametrize("override,key,expected", BAD, ids=[b[1] for b in BAD])
def test_bad_values_name_the_key(override, key, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(merge(TINY, override))
    message = str(err.value)
    assert key in message and expected in message
    assert "\n" not in message


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"data_process.train: required key is missing"):
        config_from_dict({**TINY, "data_process": {"vaild": "x"}})


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: config file not found"):
        load_config(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"model_type": ')
    with pytest.raises(ConfigError, match=r"broken.json: not valid JSON"):
        load_config(str(broken))
    path = write_config(tmp_path, merge(TINY, {"train_args": {"lr": "fast"}}), "bad.json")
    with pytest.raises(ConfigError, match=r"bad.json: train_args.lr = 'fast': expected a number"):
        load_config(path)


def test_config_round_trips_through_its_raw_dict(tmp_path):
    data = tiny_config(tmp_path)
    config = config_from_dict(data, source="x.json")
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.model_args == config.model_args
    assert again.train_args == config.train_args
    assert config.run_name == "x"


# -- keys of other families, all unknown keys at once ------------------------------------------------

def test_switching_param_json_to_taming_needs_no_deletions(caplog):
    data = json.load(open("param.json"))
    data["model_type"] = "TamingVQGAN"
    config = config_from_dict(data, source="param.json")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for key, instead in (("group_count", "ddconfig.ch_mult"), ("n_hid", "ddconfig.ch"),
                         ("n_blk_per_group", "ddconfig.num_res_blocks"), ("commitment_cost", "beta")):
        assert sum(f"model_args.{key} " in w for w in warnings) == 1
        assert any(f"model_args.{key} " in w and instead in w for w in warnings)
    assert len(warnings) == 4  # input_channels / output_channels are Taming's too: no warning
    assert config.model_args.ddconfig.in_channels == 3 and config.model_args.ddconfig.out_ch == 3
    assert "group_count" not in config.to_dict()["model_args"]  # saved checkpoints carry no ignored key


def test_switching_the_causal_video_config_to_taming_points_at_ddconfig(caplog):
    data = json.load(open("configs/causal_video.json"))
    data["model_type"] = "TamingVQGAN"
    config_from_dict(data, source="causal_video.json")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for key in ("ch", "ch_mult", "num_res_blocks", "z_channels"):
        assert any(f"model_args.{key} " in w and f"ddconfig.{key}" in w for w in warnings), warnings


def test_input_and_output_channels_are_tamings_ddconfig_channels():
    data = merge(TINY, {"model_type": "TamingVQGAN",
                        "model_args": {"input_channels": 3, "output_channels": 3, "ddconfig": {"in_channels": 3}}})
    data["model_args"] = {k: v for k, v in data["model_args"].items() if k in ("input_channels", "output_channels",
                                                                              "ddconfig")}
    assert config_from_dict(data).model_args.ddconfig.out_ch == 3
    data["model_args"]["input_channels"] = 1
    with pytest.raises(ConfigError, match=r"model_args.input_channels = 1 disagrees with model_args.ddconfig"):
        config_from_dict(data)


def test_an_unknown_model_args_key_with_a_line_break_is_shown_on_one_line():
    """Found by the config fuzz test: ``{"\\n": null}`` in model_args gave a two-line error."""
    data = json.load(open("param.json"))
    data["model_args"]["\n"] = None
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, source="param.json")
    assert "\n" not in str(err.value) and "model_args.'\\n'" in str(err.value)


def test_every_unknown_key_is_named_in_one_error():
    data = merge(TINY, {"train_args": {"learnig_rate": 1.0}, "data_args": {"batchsize": 2},
                        "model_args": {"no_such_key": 1}})
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    message = str(err.value)
    assert "3 unknown keys" in message and "\n" not in message
    for key in ("train_args.learnig_rate", "data_args.batchsize", "model_args.no_such_key"):
        assert key in message
    assert "did you mean 'batch_size'" in message


# The example config of the design document, its data paths pointed at the built-in samples.
DESIGN_DOC_EXAMPLE = {
    "model_type": "vqvae2optvq", "use_images": True, "scaling_rates": [4, 2],
    "model_args": {"group_count": 5, "n_hid": 256, "vocab_size": 4096, "n_init": 1024, "input_channels": 3,
                   "output_channels": 3, "commitment_cost": 0.25, "decay": 0.99},
    "data_args": {"batch_size": 1, "num_threads": 6, "device_id": 0, "training_data_files": ["builtin:train"],
                  "validation_data_files": ["builtin:valid"], "seed": 2025, "sequence_length": 8, "shard_id": 0,
                  "num_shards": 1, "initial_prefetch_size": 1024},
    "train_args": {"num_steps": 300020, "lr": 0.0001, "lr_decay": 0.99, "folder_name": "save_data",
                   "checkpoint_path": None, "device": "auto", "save_interval": 10000, "validation_interval": 1000,
                   "use_gan": True, "disc_factor": 0.8, "disc_start": 50000, "pixel_loss_factor": 1.0,
                   "perceptual_loss_factor": 1.0, "disc_lr": 1e-05, "disc_beta1": 0.5, "disc_beta2": 0.9},
    "use_wandb": False, "project_name": "train_vqgan_3.2.0_new_data",
}


def test_the_design_documents_example_config_loads_with_one_warning(caplog):
    config = config_from_dict(DESIGN_DOC_EXAMPLE, source="example.json")
    assert config.model_args.vocab_size == 4096 and config.model_args.n_hid == 256
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "model_args.group_count" in warnings[0] and "scaling_rates" in warnings[0]
