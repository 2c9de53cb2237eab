"""The data pipeline: exact frames, reproducible order, disjoint shards, hostile files."""
import logging

import cv2
import numpy as np
import pytest
import torch

from tests.helpers import TINY, merge, sample_clip_path, write_video
from core.config import ConfigError
from models.builders import config_from_dict
from data_utils.frame_reader import resize_rgb
from data_utils.sample_data import sample_image_files, sample_video_files
from data_utils.datasets import ImageDataset, VideoDataset
from data_utils.files import list_videos, resolve_data_files, shard_files
from data_utils.loader import collate_fn
from train.video_utils import video_pipe


def decode_independently(path, start, length, size):
    cap = cv2.VideoCapture(path)
    frames = []
    for index in range(start + length):
        ok, frame = cap.read()
        assert ok
        if index >= start:
            frames.append(resize_rgb(frame, size))
    cap.release()
    return np.stack(frames)


def test_builtin_samples_are_real_and_disjoint():
    train, valid = sample_video_files("train"), sample_video_files("valid")
    assert {p.rsplit("/", 1)[-1] for p in train} == {"bikes.mp4", "bigbuckbunny.mp4"}
    assert not set(train) & set(valid)
    assert not set(sample_image_files("train")) & set(sample_image_files("valid"))


def test_clips_equal_independent_decode_in_rgb():
    path = sample_clip_path("bikes.mp4")
    dataset = VideoDataset([path], sequence_length=5, size=(36, 52), seed=3, cache_frames=64)
    for k in [0, 7, 3, 50, 1]:  # random order: forward reads, backward seeks, cache hits
        _, start = dataset.locate(k)
        clip, clip_path = dataset[k]
        assert clip_path == path and clip.dtype == torch.uint8 and clip.shape == (5, 36, 52, 3)
        np.testing.assert_array_equal(clip.numpy(), decode_independently(path, start, 5, (36, 52)))
    # RGB, not BGR: the first pixel row matches a BGR->RGB conversion of the raw frame
    cap = cv2.VideoCapture(path)
    _, raw = cap.read()
    first = VideoDataset([path], 1, (raw.shape[0], raw.shape[1]), clips_per_file=1)[0][0][0].numpy()
    np.testing.assert_array_equal(first, raw[..., ::-1])


def test_sample_order_is_reproducible_and_resumable():
    path = sample_clip_path()
    a = VideoDataset([path, sample_clip_path("bikes.mp4")], 2, (16, 16), seed=11)
    b = VideoDataset([path, sample_clip_path("bikes.mp4")], 2, (16, 16), seed=11)
    assert [a.locate(k) for k in range(20)] == [b.locate(k) for k in range(20)]
    c = VideoDataset([path, sample_clip_path("bikes.mp4")], 2, (16, 16), seed=12)
    assert [a.locate(k) for k in range(20)] != [c.locate(k) for k in range(20)]
    config = config_from_dict(merge(TINY, {"data_args": {"resolution": [16, 16]}}))
    loader = video_pipe([path], config=config, batch_size=2, sequence_length=2, seed=5)
    batches = [next(iter(loader))[0] for _ in range(1)]
    stream = iter(loader)
    first_three = [next(stream)[0] for _ in range(3)]
    loader.seek(4)  # resume at sample 4 = the third batch
    assert torch.equal(next(iter(loader))[0], first_three[2])
    assert torch.equal(batches[0], first_three[0])


def test_sharding_gives_disjoint_covers():
    files = [f"f{i}.mp4" for i in range(11)]
    shards = [shard_files(files, i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(files)
    assert all(not set(shards[i]) & set(shards[j]) for i in range(3) for j in range(i + 1, 3))


def test_collate_shapes():
    batch = [(torch.zeros(3, 8, 8, 3, dtype=torch.uint8), "a"), (torch.ones(3, 8, 8, 3, dtype=torch.uint8), "b")]
    images, paths = collate_fn(batch)
    assert images.shape == (2, 3, 8, 8, 3) and paths == ["a", "b"]


def test_validation_pass_is_fixed_and_finite():
    config = config_from_dict(merge(TINY, {"data_args": {"resolution": [16, 16]}}))
    loader = video_pipe([sample_clip_path()], config=config, batch_size=3, sequence_length=2, validation=True,
                        clips_per_file=5)
    first = torch.cat([b[0] for b in loader])
    second = torch.cat([b[0] for b in loader])
    assert first.shape[0] == 5 and torch.equal(first, second)


def test_hostile_video_files_are_skipped_and_counted(tmp_path, caplog):
    good = write_video(tmp_path / "good clip ü.mp4", 12)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all")
    short = write_video(tmp_path / "short.mp4", 2)
    data = open(good, "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    files = list_videos(str(tmp_path))
    assert len(files) == 5
    with caplog.at_level(logging.WARNING):
        dataset = VideoDataset(files, sequence_length=4, size=(16, 16))
    assert dataset.files == [good]
    assert dataset.skipped == 4
    assert sum("skipping" in r.message for r in caplog.records) == 4
    clip, _ = dataset[0]
    assert clip.shape == (4, 16, 16, 3)


def test_no_usable_video_names_the_folder(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ConfigError, match="data_process.train: no usable video"):
        VideoDataset([str(tmp_path / "empty.mp4")], 4, (16, 16), folder="data_process.train")
    with pytest.raises(ConfigError, match="no video files in folder"):
        resolve_data_files(str(tmp_path / ".."), False, "data_process.train") if False else \
            resolve_data_files(str(_empty_dir(tmp_path)), False, "data_process.train")
    with pytest.raises(ConfigError, match="no such file or folder"):
        resolve_data_files(str(tmp_path / "missing"), False, "data_process.vaild")


def _empty_dir(tmp_path):
    folder = tmp_path / "nothing here"
    folder.mkdir()
    return folder


def test_hostile_images_are_used_or_skipped(tmp_path, caplog):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([rgb, np.full((20, 30), 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), (rgb.astype(np.uint16) * 257))
    cv2.imwrite(str(tmp_path / "große Datei.png"), np.zeros((3000, 2500, 3), np.uint8))
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "fake.jpg").write_text("no image")
    files = sorted(str(p) for p in tmp_path.iterdir())
    with caplog.at_level(logging.WARNING):
        dataset = ImageDataset(files, sequence_length=len(files), size=(8, 12), clips_per_file=1)
        clip, _ = dataset[0]
    assert dataset.skipped == 2  # the zero-byte file and the one that is no image, at start
    assert clip.shape == (len(files), 8, 12, 3) and clip.dtype == torch.uint8
    assert "fake.jpg" in " ".join(r.message for r in caplog.records)  # unreadable: warned


def test_chunked_sampling_keeps_clip_starts_uniform():
    from data_utils.datasets import ChunkPlan

    counts, length = [700, 40], 4
    plan = ChunkPlan(counts, length, cache_frames=400, seed=3)
    assert len(plan.chunks) > len(counts)  # the long file is split into chunks
    draws = [plan.locate(k)[:2] for k in range(40000)]
    starts_total = sum(c - length + 1 for c in counts)
    share_short = sum(i == 1 for i, _ in draws) / len(draws)
    assert abs(share_short - (counts[1] - length + 1) / starts_total) < 0.02
    long_starts = np.array([s for i, s in draws if i == 0])
    assert long_starts.min() >= 0 and long_starts.max() <= counts[0] - length
    histogram, _ = np.histogram(long_starts, bins=8, range=(0, counts[0] - length + 1))
    assert histogram.min() > 0.8 * histogram.mean()  # flat across the whole file
    # consecutive samples mostly come from different places (chunks are drawn with replacement)
    same = sum(plan.locate(k)[2] == plan.locate(k + 1)[2] for k in range(2000))
    assert same < 0.5 * 2000
