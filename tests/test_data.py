"""The data pipeline: exact frames, reproducible order, disjoint shards, hostile files."""
import logging
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from tests.helpers import TINY, merge, sample_clip_path, write_video
from core.config import ConfigError
from models.builders import config_from_dict
from data_utils.frame_reader import read_image
from data_utils.geometry import crop_clip, fit_frame, resize_rgb
from data_utils.sample_data import sample_image_files, sample_video_files
from data_utils.datasets import ImageDataset, VideoDataset
from data_utils.files import compose_shards, list_videos, resolve_data_files, shard_files
from data_utils.loader import build_loader, collate_fn
from data_utils.stream_plan import StreamPlan
from train.video_utils import video_pipe


def decode_independently(path, start, length, size, mode="stretch"):
    cap = cv2.VideoCapture(path)
    frames = []
    for index in range(start + length):
        ok, frame = cap.read()
        assert ok
        if index >= start:
            frames.append(fit_frame(frame, size, mode) if mode != "stretch" else resize_rgb(frame, size))
    cap.release()
    return np.stack(frames)


def data_args(**overrides):
    return config_from_dict(merge(TINY, {"data_args": {"resolution": [16, 16], **overrides}})).data_args


def test_builtin_samples_are_real_and_disjoint():
    train, valid = sample_video_files("train"), sample_video_files("valid")
    assert {p.rsplit("/", 1)[-1] for p in train} == {"bikes.mp4", "bigbuckbunny.mp4"}
    assert not set(train) & set(valid)
    assert not set(sample_image_files("train")) & set(sample_image_files("valid"))


def test_clips_equal_independent_decode_in_rgb():
    path = sample_clip_path("bikes.mp4")
    dataset = VideoDataset([path], sequence_length=5, size=(36, 52), seed=3, cache_frames=64, resize_mode="stretch")
    for k in [0, 7, 3, 50, 1]:  # random order: forward reads, backward seeks, cache hits
        _, start = dataset.locate(k)
        clip, clip_path = dataset[k]
        assert clip_path == path and clip.dtype == torch.uint8 and clip.shape == (5, 36, 52, 3)
        np.testing.assert_array_equal(clip.numpy(), decode_independently(path, start, 5, (36, 52)))
    # RGB, not BGR: the first pixel row matches a BGR->RGB conversion of the raw frame
    cap = cv2.VideoCapture(path)
    _, raw = cap.read()
    native = VideoDataset([path], 1, raw.shape[:2], clips_per_file=1, resize_mode="stretch")
    np.testing.assert_array_equal(native[0][0][0].numpy(), raw[..., ::-1])


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
    write_video(tmp_path / "short.mp4", 2)
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


def test_stream_plan_keeps_clip_starts_uniform():
    counts, length = [700, 40], 4
    plan = StreamPlan([(i, 0, c - length + 1) for i, c in enumerate(counts)], length, cache_frames=400, key=(3, 0))
    assert len(plan.chunks) > len(counts)  # the long file is split into chunks
    draws = [plan.locate(k)[:2] for k in range(40000)]
    starts_total = sum(c - length + 1 for c in counts)
    share_short = sum(i == 1 for i, _ in draws) / len(draws)
    assert abs(share_short - (counts[1] - length + 1) / starts_total) < 0.02
    long_starts = np.array([s for i, s in draws if i == 0])
    assert long_starts.min() >= 0 and long_starts.max() <= counts[0] - length
    histogram, _ = np.histogram(long_starts, bins=8, range=(0, counts[0] - length + 1))
    assert histogram.min() > 0.8 * histogram.mean()  # flat across the whole file
    # consecutive samples come from different chunks, each cached chunk is used by several
    spans = [plan.locate(k)[:3:2] for k in range(2000)]
    assert sum(a == b for a, b in zip(spans, spans[1:])) < 0.1 * len(spans)
    assert len(set(spans)) < len(spans) / 2


def test_training_stream_draws_from_many_files_at_once(tmp_path):
    """32 consecutive clips of a folder of 16 videos come from nearly as many files as i.i.d. draws."""
    files = [write_video(tmp_path / f"v{i:02d}.mp4", 40, size=(16, 16), seed=i) for i in range(16)]
    dataset = VideoDataset(files, sequence_length=2, size=(8, 8), seed=5)
    drawn = [dataset.locate(k)[0] for k in range(1024)]
    distinct = np.mean([len(set(drawn[k:k + 32])) for k in range(len(drawn) - 31)])
    iid = 16 * (1 - (15 / 16) ** 32)  # 13.97
    assert distinct >= 0.8 * iid


def test_parts_sample_the_whole_data_set_uniformly(tmp_path):
    """Shards x ranks split all clip starts equally: a short file on a small shard is not oversampled."""
    counts = [60, 6, 30, 30]
    files = [write_video(tmp_path / f"v{i}.mp4", n, size=(16, 16), seed=i) for i, n in enumerate(counts)]
    drawn = []
    for part in range(2):
        small_chunks = data_args(sequence_length=2, initial_prefetch_size=72)  # many chunk draws in 4000 samples
        dataset = build_loader(files, small_chunks, False, shard_id=part, num_shards=2).dataset
        drawn.append([(dataset.files[i], start) for i, start in map(dataset.locate, range(4000))])
    assert not set(drawn[0]) & set(drawn[1])  # the parts never share a clip
    starts = np.array(counts) - 1
    for f, path in enumerate(files):
        share = sum(p == path for p, _ in drawn[0] + drawn[1]) / 8000
        assert abs(share - starts[f] / starts.sum()) < 0.015, (path, share)


def test_fewer_files_than_parts_share_a_long_file():
    clip = sample_clip_path()
    parts = [build_loader([clip], data_args(sequence_length=2), False, shard_id=p, num_shards=3).dataset
             for p in range(3)]
    seen = [{p.locate(k) for k in range(300)} for p in parts]
    assert all(seen) and not any(seen[a] & seen[b] for a in range(3) for b in range(a + 1, 3))
    assert len(set().union(*seen)) > 100  # the whole file, not three copies of one corner


def test_configured_shard_composes_with_the_rank():
    assert compose_shards(None, None, rank=1, world_size=2) == (1, 2)
    assert compose_shards(0, 1, rank=1, world_size=2) == (1, 2)  # the design document's example config
    assert compose_shards(1, 2, rank=0, world_size=3) == (3, 6)  # shard 1 of 2, split among 3 ranks
    with pytest.raises(ConfigError, match="shard_id = 2"):
        compose_shards(2, 2, rank=0, world_size=1)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    from PIL import Image  # pillow writes the EXIF tag; OpenCV cannot

    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :24] = 255  # left half white as stored; orientation 6 shows it rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = read_image(str(tmp_path / "phone.jpg"), (48, 32))
    assert upright.shape == (48, 32, 3)
    assert upright[:20].mean() > 200 and upright[-20:].mean() < 50  # the white half is on top


def test_crop_keeps_the_aspect_ratio_at_a_random_place_for_training():
    path = sample_clip_path("bikes.mp4")  # 640x272: covering 32x32 needs 75x32, a crop of 32 of 75 columns
    assert data_args().resize_mode == "crop"
    train = VideoDataset([path], 2, (32, 32), seed=1)
    lefts = set()
    for k in range(12):
        (_, start), clip = train.locate(k), train[k][0].numpy()
        cover = decode_independently(path, start, 2, (32, 32), mode="crop")
        assert cover.shape[1:3] == (32, 75)
        matches = [x for x in range(75 - 32 + 1) if np.array_equal(clip, cover[:, :, x:x + 32])]
        assert matches, "every frame of a clip is cut at one place of the covering frames"
        lefts.add(matches[0])
    assert len(lefts) > 3
    valid = VideoDataset([path], 2, (32, 32), clips_per_file=2)
    _, start = valid.locate(1)
    expected = crop_clip(decode_independently(path, start, 2, (32, 32), mode="crop"), (32, 32))
    np.testing.assert_array_equal(valid[1][0].numpy(), expected)  # the centre, every pass


def test_pad_and_stretch_and_the_geometry_logged_once(caplog):
    path = sample_clip_path("bikes.mp4")
    with caplog.at_level(logging.INFO):
        padded = VideoDataset([path], 2, (32, 32), seed=1, resize_mode="pad")
        clips = [padded[k][0].numpy() for k in range(4)]
    geometry = [r.message for r in caplog.records if "resize_mode" in r.message]
    assert len(geometry) == 1 and "640x272" in geometry[0] and "32x14" in geometry[0]
    for clip in clips:  # 272/640 of 32 rows is 14: 9 black rows above and below
        assert clip[:, :9].max() == 0 and clip[:, -9:].max() == 0 and clip[:, 9:23].mean() > 20
    stretched = VideoDataset([path], 2, (32, 32), clips_per_file=1, resize_mode="stretch")[0][0].numpy()
    np.testing.assert_array_equal(stretched, decode_independently(path, 0, 2, (32, 32)))
    with pytest.raises(ConfigError, match="resize_mode"):
        data_args(resize_mode="zoom")


def write_truncated_video(tmp_path, frames=60, keep=0.4):
    """An mp4 whose index (moved to the front) declares ``frames`` frames, cut to ``keep`` of its bytes."""
    whole = write_video(tmp_path / "whole.mp4", frames, size=(32, 32))
    faststart = str(tmp_path / "faststart.mp4")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", whole, "-c", "copy",
                    "-movflags", "+faststart", "-y", faststart], check=True)
    data = open(faststart, "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(data[: int(len(data) * keep)])
    cap = cv2.VideoCapture(str(tmp_path / "truncated.mp4"))
    declared, decodable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.grab():
        decodable += 1
    assert declared == frames and 8 <= decodable < frames / 2
    return str(tmp_path / "truncated.mp4"), decodable


def test_overstated_frame_count_is_corrected_at_the_first_failed_read(tmp_path, caplog):
    path, decodable = write_truncated_video(tmp_path)
    with caplog.at_level(logging.WARNING):
        dataset = VideoDataset([path], 4, (32, 32), seed=0)  # the video's own size: any resize_mode keeps it
        failed = []
        read = dataset.reader.clip
        dataset.reader.clip = lambda *a: failed.append(a) if (clip := read(*a)) is None else clip
        clips = [dataset[k][0].numpy() for k in range(60)]
    assert len(failed) == 2  # one failed read and its retry, then the tail is never asked for again
    assert sum(path in r.message for r in caplog.records) == 1
    assert dataset.frame_counts == [decodable]
    located = [dataset.locate(k)[1] for k in range(60)]
    assert max(located) <= decodable - 4
    for k in (0, 7, int(np.argmax(located))):  # each sample is the clip its place says, not a stand-in
        np.testing.assert_array_equal(clips[k], decode_independently(path, located[k], 4, (32, 32)))
    backwards = VideoDataset([path], 4, (32, 32), seed=0)
    for k in reversed(range(60)):
        backwards[k]
    assert [backwards.locate(k)[1] for k in range(60)] == located  # whenever it was found out


def test_overstated_frame_count_warns_once_over_validation_passes(tmp_path, caplog):
    path, decodable = write_truncated_video(tmp_path)
    dataset = VideoDataset([path], 4, (16, 16), clips_per_file=5)
    with caplog.at_level(logging.WARNING):
        passes = [[dataset[k][0] for k in range(len(dataset))] for _ in range(3)]
    assert sum(path in r.message for r in caplog.records) == 1
    starts = [dataset.locate(k)[1] for k in range(len(dataset))]
    assert starts[-1] == decodable - 4 and len(set(starts)) == 5  # evenly spaced over what decodes
    assert all(torch.equal(a, b) for a, b in zip(passes[0], passes[2]))
