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
