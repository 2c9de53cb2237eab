"""The design document's training utilities, where it names them."""
from core.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (the seed's names live here)
from core.config import TrainArgs
from core.runtime import autocast, format_duration, seed_everything, select_device, set_deterministic  # noqa: F401
from models.architecture import analyze_model_architecture  # noqa: F401
from models.builders import load_config


def get_train_args_from_config(config_path: str = "param.json") -> TrainArgs:
    """The design document's accessor: the validated ``train_args`` of a config file."""
    return load_config(config_path).train_args
