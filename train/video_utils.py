"""The design document's data entry point, ``video_pipe``, over the data floor's ``build_loader``."""
from typing import Optional

import attrs

from data_utils.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_images, list_videos  # noqa: F401
from data_utils.loader import DataLoaderWrapper, build_loader
from models.builders import load_config


def video_pipe(filenames, config_path: str = "param.json", batch_size: int = 4, num_threads: int = 0,
               sequence_length: int = 8, shard_id: int = 0, num_shards: int = 1, initial_prefetch_size: int = 2048,
               seed: int = 2025, random_shuffle: bool = True, config=None, validation: Optional[bool] = None,
               **loader_options) -> DataLoaderWrapper:
    """The seed's loader factory: videos (or images when the config says ``use_images``).

    ``random_shuffle=False`` (or ``validation=True``) gives a finite, fixed pass instead
    of the endless random training stream.
    """
    config = config or load_config(config_path)
    data_args = attrs.evolve(config.data_args, batch_size=batch_size, num_threads=num_threads,
                             sequence_length=sequence_length, initial_prefetch_size=initial_prefetch_size)
    validation = (not random_shuffle) if validation is None else validation
    return build_loader(list(filenames), data_args, config.use_images, shard_id=shard_id, num_shards=num_shards,
                        seed=seed, validation=validation, **loader_options)
