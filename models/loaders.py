"""Models from files: a vqvc checkpoint rebuilt into its model, and fit checks against a model.

(Upstream Taming releases load through ``models.taming.checkpoint_loading``.)
"""
from core.checkpoint import CheckpointError, load_checkpoint, verify_checkpoint
from core.config_schema import ConfigError
from models.builders import config_from_dict, create_model, resolve_adapter
from models.quantizers import optional_state_keys


def check_compatible(ckpt: dict, model, model_type: str, path: str) -> None:
    """Refuse a checkpoint of another model type or shape, naming both."""
    saved_type = ckpt.get("model_type") or (ckpt.get("config") or {}).get("model_type")
    if saved_type and saved_type != model_type:
        same_family = False
        try:
            same_family = resolve_adapter(saved_type) is resolve_adapter(model_type)
        except ConfigError:  # a model type this version does not know
            pass
        if not same_family:
            raise CheckpointError(f"{path}: checkpoint is a {saved_type!r} model, the config asks for {model_type!r}")
    expected = model.state_dict()
    state = ckpt["state_dict"]
    optional = optional_state_keys(model)  # usage statistics: older files lack them, they start afresh
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected and k not in optional]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (checkpoint vs config), e.g. {wrong[:2]}")
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{path}: does not fit the configured {model_type!r} model: " + "; ".join(parts))


def model_from_checkpoint(path: str, device="cpu", allow_unsafe: bool = False) -> tuple:
    """``(model, config, checkpoint)``: the model rebuilt from the config saved in the file
    (with the EMA of its weights when the run kept one)."""
    ckpt = verify_checkpoint(load_checkpoint(path, "cpu", allow_unsafe), path)
    config = config_from_dict(ckpt["config"], source=f"{path}[config]")
    model = create_model(config=config)
    check_compatible(ckpt, model, config.model_type, path)
    # the EMA of the weights, when training kept one, is what validation measured
    model.load_state_dict(ckpt.get("ema_state_dict") or ckpt["state_dict"])
    model.to(device).eval()
    return model, config, ckpt
