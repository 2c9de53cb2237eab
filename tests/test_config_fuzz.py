"""Any JSON object given as a config either loads or raises ConfigError — nothing else."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import TINY
from core.config import ConfigError
from models.builders import config_from_dict

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)

SECTIONS = ["model_type", "use_images", "scaling_rates", "model_args", "data_args", "train_args", "data_process",
            "use_wandb", "project_name"]
KEYS = {section: list(TINY.get(section, {})) if isinstance(TINY.get(section), dict) else [] for section in SECTIONS}
KEYS["train_args"] += ["precision", "resume", "grad_clip", "compute_fid", "disc_loss", "recon_loss"]
KEYS["model_args"] += ["dead_code_threshold", "commitment_cost"]
MODEL_TYPES = st.sampled_from(["VqVae", "VQVAE2", "vqvae2optvq", "TamingVQGAN", "EMAVQ", "nope", ""])


def mutate(draw_value, section, key):
    return {section: {key: draw_value}} if KEYS[section] else {section: draw_value}


@st.composite
def configs(draw):
    data = json.loads(json.dumps(TINY))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(SECTIONS))
        value = draw(json_values)
        if KEYS[section] and isinstance(data.get(section), dict) and draw(st.booleans()):
            key = draw(st.sampled_from(KEYS[section] + ["unknown_key"]))
            data[section][key] = value
        elif section == "model_type":
            data[section] = draw(st.one_of(MODEL_TYPES, json_values))
        else:
            data[section] = value
    return data


def check(data):
    try:
        config_from_dict(data)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_mutated_configs_load_or_raise_config_error(data):
    check(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_arbitrary_objects_load_or_raise_config_error(data):
    check(data)


@settings(max_examples=50, deadline=None)
@given(json_values)
def test_non_objects_raise_config_error(data):
    check(data)
