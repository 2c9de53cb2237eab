"""vqvc as a library: a trained checkpoint in three lines, from any folder once installed.

    import vqvc
    model = vqvc.load_model("runs/param/checkpoints/checkpoint_step00000300.pth.tar")
    indices = model.encode(model.clips_to_input(clips))   # clips: uint8 (b, d, h, w, 3)
    frames = model.decode(indices)                        # ((b d), 3, h, w) in [-1, 1]

The model is the family's adapter (``models.adapter_base.BaseVqVaeAdapter``): its
``encode``/``decode``, ``clips_to_input``, ``vocab_sizes`` and ``latent_shapes`` are the API.
The command line is ``vqvc train | eval | codec | menu`` (``vqvc.cli``).
"""
from importlib.metadata import PackageNotFoundError, version

from models.builders import create_model, load_config
from models.loaders import model_from_checkpoint

try:
    __version__ = version("vqvc")
except PackageNotFoundError:  # used from a checkout without installing
    __version__ = "0+unknown"

__all__ = ["load_model", "load_config", "create_model", "model_from_checkpoint"]


def load_model(checkpoint: str, device="cpu", allow_unsafe: bool = False):
    """The model of a vqvc checkpoint, rebuilt from the config saved in it: on ``device``, in eval
    mode, without gradients (inference only; ``model_from_checkpoint`` keeps them)."""
    model, _config, _ckpt = model_from_checkpoint(checkpoint, device, allow_unsafe)
    return model.requires_grad_(False)
