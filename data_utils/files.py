"""Which files a data set is made of: folders searched by extension, file lists, ``builtin:`` samples,
and the share of them each shard x DDP rank trains on."""
import os
from typing import Optional, Union

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


def compose_shards(shard_id: Optional[int], num_shards: Optional[int], rank: int, world_size: int) -> tuple:
    """(part, parts): the configured shard of the data set (default: all of it), split once more
    among the DDP ranks, so ranks never share a part whatever the config says."""
    shard_id, num_shards = shard_id or 0, num_shards or 1
    if shard_id >= num_shards:
        raise ConfigError(f"data_args.shard_id = {shard_id}: expected < num_shards ({num_shards})")
    return shard_id * world_size + rank, num_shards * world_size


def shard_files(files: list, part: int, parts: int) -> list:
    """Part ``part`` of ``parts`` equal, contiguous, disjoint shares of ``files`` (sizes differ by at most one)."""
    return files[part * len(files) // parts:(part + 1) * len(files) // parts]


def shard_starts(starts: list, part: int, parts: int) -> list:
    """Part ``part`` of ``parts`` equal shares of all clip starts, as ``(file, lo, hi)`` ranges.

    ``starts[i]`` clip starts of file ``i`` are laid end to end and cut into ``parts``
    contiguous pieces of equal size (to one start): sampling each part uniformly samples the
    whole data set uniformly, and a long file can be shared by several parts.
    """
    total = sum(starts)
    first, end = part * total // parts, (part + 1) * total // parts
    segments, offset = [], 0
    for i, count in enumerate(starts):
        lo, hi = max(first - offset, 0), min(end - offset, count)
        if lo < hi:
            segments.append((i, lo, hi))
        offset += count
    return segments


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
