"""Which files a data set is made of: folders searched by extension, file lists, ``builtin:`` samples, shards."""
import os
from typing import Union

from core.config import Config
from core.config_schema import ConfigError
from data_utils.sample_data import builtin_files, is_builtin

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".y4m")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _list_files(directory: str, extensions: tuple) -> list:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(extensions))
    return sorted(found)


def list_videos(directory: str) -> list:
    """Video files under ``directory`` (recursive, by extension, sorted)."""
    return _list_files(directory, VIDEO_EXTENSIONS)


def list_images(directory: str) -> list:
    """Image files under ``directory`` (recursive, by extension, sorted)."""
    return _list_files(directory, IMAGE_EXTENSIONS)


def resolve_data_files(spec: Union[str, list, None], use_images: bool, key: str) -> list:
    """Files named by a ``data_process`` entry: ``builtin:train|valid``, folders or files."""
    if spec is None:
        return []
    files = []
    for item in [spec] if isinstance(spec, str) else spec:
        if is_builtin(item):
            files.extend(builtin_files(item, use_images))
        elif os.path.isdir(item):
            found = list_images(item) if use_images else list_videos(item)
            if not found:
                kind = "image" if use_images else "video"
                raise ConfigError(f"{key}: no {kind} files in folder {item!r}")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise ConfigError(f"{key} = {item!r}: no such file or folder")
    return files


def shard_files(files: list, shard_id: int, num_shards: int) -> list:
    """A disjoint share of ``files`` for one shard (files ``shard_id, shard_id+n, ...``)."""
    return files[shard_id::num_shards]


def config_data_files(config: Config) -> tuple:
    """``(training files, validation files)`` a config names: ``data_process`` if set, else the
    ``data_args`` lists (folders, files or ``builtin:`` samples either way); ``ConfigError`` if none."""
    if config.data_process is not None:
        sources = ((config.data_process.train, "data_process.train"), (config.data_process.vaild, "data_process.vaild"))
    else:
        sources = ((config.data_args.training_data_files, "data_args.training_data_files"),
                   (config.data_args.validation_data_files, "data_args.validation_data_files"))
    train_files, valid_files = (resolve_data_files(spec, config.use_images, key) for spec, key in sources)
    if not train_files:
        raise ConfigError(f"{config.source}: no training data: set data_process.train or data_args.training_data_files")
    return train_files, valid_files
