"""Video loader speed: random training clips against a sequential read and ffmpeg's decode.

For each video the table gives frames per second of

  ffmpeg      the decoder alone: the ffmpeg binary imageio-ffmpeg ships, ``-f null``
  sequential  a bare OpenCV read of the whole file, every frame converted to RGB and
              resized to the training size: the most the loader could deliver
  random      ``VideoDataset`` drawing ``--clips`` training samples (uniformly random
              start, as training draws them) from a dataset built fresh for the file,
              so its frame cache starts cold; building the dataset is timed too
  warm        the next ``--clips`` samples of the same dataset

and random / sequential, the loader's efficiency (target >= 0.8).

Then the training stream over a folder of ``--folder-videos`` videos (stream copies of
bikes.mp4, or your ``--videos``): the mean number of distinct files among 32 consecutive
training clips against its expectation under i.i.d. sampling of (file, start), and the
random / sequential rate of the same data set (target >= 0.8 for both ratios).

The videos: the built-in training clips (bikes.mp4, 640x272, 250 frames;
bigbuckbunny.mp4, 1280x720, 132 frames), both shorter than the loader's default frame
cache, and bikes.mp4 looped ``--loops`` times by stream copy (no re-encode) into a
temporary file that outgrows the cache, as most real training videos do. Or your own
videos with ``--videos``. Each measurement is repeated ``--repeats`` times, alternating
the methods, and the fastest run of each is kept (the machines are shared and noisy).

Then the loader's memory for a 720p clip (bigbuckbunny.mp4): the peak of numpy
allocations (tracemalloc; decoded frames and the cache) and the growth of the
process's resident memory (its high-water mark, Linux), against the cache's bound.

The last lines are the headline: the smallest random / sequential ratio over the videos,
and the diversity ratio with the speed ratio on the folder.

    python benchmarks/bench_data.py [--clips 400] [--long-clips 800] [--loops 16]
                                    [--folder-videos 16] [--folder-clips 800]
                                    [--sequence-length 8] [--size 128] [--resize-mode crop]
                                    [--repeats 2]
                                    [--videos A.mp4 B.mp4 ...]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import tracemalloc

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import imageio_ffmpeg

from benchmarks.common import Stopwatch, format_table, reset_peak_rss, rss_mib, write
from data_utils.frame_reader import probe_video
from data_utils.geometry import RESIZE_MODES, decoded_size, fit_frame
from data_utils.sample_data import sample_video_files
from data_utils.datasets import VideoDataset

TARGET = 0.8
WINDOW = 32  # consecutive training clips whose distinct files are counted


def ffmpeg_rate(path: str, frames: int) -> float:
    """Frames/s of ffmpeg decoding the first video stream and discarding it."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", path,
               "-map", "0:v:0", "-an", "-f", "null", "-"]
    with Stopwatch() as clock:
        subprocess.run(command, check=True)
    return frames / clock.seconds


def sequential_rate(path: str, size: tuple, mode: str) -> tuple:
    """(frames, frames/s) of an OpenCV read of the whole file, resized as the loader does."""
    frames = 0
    with Stopwatch() as clock:
        capture = cv2.VideoCapture(path)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            fit_frame(frame, size, mode)
            frames += 1
        capture.release()
    return frames, frames / clock.seconds


def random_rates(path: str, clips: int, sequence_length: int, size: tuple, mode: str) -> tuple:
    """Frames/s of ``clips`` training samples from a fresh dataset (cold), then of the next ``clips`` (warm)."""
    with Stopwatch() as cold:
        dataset = VideoDataset([path], sequence_length, size, seed=0, resize_mode=mode)
        for k in range(clips):
            dataset[k]
    with Stopwatch() as warm:
        for k in range(clips, 2 * clips):
            dataset[k]
    dataset.reader.close()
    delivered = clips * sequence_length
    return delivered / cold.seconds, delivered / warm.seconds


def frame_count(path: str) -> int:
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def distinct_files(paths: list, sequence_length: int, samples: int) -> tuple:
    """(mean distinct files among ``WINDOW`` consecutive training clips, its i.i.d. expectation).

    Under i.i.d. sampling of (file, start) file ``f`` is drawn with probability ``p_f``
    proportional to its clip starts, and ``WINDOW`` draws show ``sum_f 1 - (1 - p_f)^WINDOW`` files.
    """
    dataset = VideoDataset(paths, sequence_length, (16, 16), seed=0)
    drawn = [dataset.files[dataset.locate(k)[0]] for k in range(samples)]
    observed = np.mean([len(set(drawn[k:k + WINDOW])) for k in range(samples - WINDOW + 1)])
    starts = np.array([frame_count(p) - sequence_length + 1 for p in paths], dtype=np.float64)
    expected = float(np.sum(1 - (1 - starts / starts.sum()) ** WINDOW))
    return float(observed), expected


def folder_rates(paths: list, clips: int, args, size: tuple) -> dict:
    """Best-of-``repeats`` sequential (every file read once) and random (cold) rates over a data set."""
    best = {"sequential": 0.0, "random": 0.0}
    for _ in range(args.repeats):
        frames, seconds = 0, 0.0
        for path in paths:
            count, rate = sequential_rate(path, size, args.resize_mode)
            frames, seconds = frames + count, seconds + count / rate
        with Stopwatch() as clock:
            dataset = VideoDataset(paths, args.sequence_length, size, seed=0, resize_mode=args.resize_mode)
            for k in range(clips):
                dataset[k]
        dataset.reader.close()
        rates = {"sequential": frames / seconds, "random": clips * args.sequence_length / clock.seconds}
        best = {key: max(best[key], rates[key]) for key in best}
    return best


def copy_video(path: str, folder: str, copies: int) -> list:
    """``copies`` stream copies of ``path`` in ``folder``: a data set of equally long videos."""
    outs = []
    for i in range(copies):
        out = os.path.join(folder, f"video{i:02d}.mp4")
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", path,
                   "-map", "0:v:0", "-c", "copy", "-y", out]
        subprocess.run(command, check=True)
        outs.append(out)
    return outs


def loop_video(path: str, loops: int, folder: str) -> str:
    """``path`` played ``loops`` times, by stream copy (the same keyframes and bitrate, no re-encode)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(folder, f"{stem}_x{loops}.mp4")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-stream_loop", str(loops - 1),
               "-i", path, "-map", "0:v:0", "-c", "copy", "-y", out]
    subprocess.run(command, check=True)
    return out


def measure_rates(path: str, clips: int, args, size: tuple) -> dict:
    """Best-of-``repeats`` rates of each method, the methods alternating within each repeat."""
    best = {"ffmpeg": 0.0, "sequential": 0.0, "random": 0.0, "warm": 0.0}
    frames = 0
    for _ in range(args.repeats):
        frames, sequential = sequential_rate(path, size, args.resize_mode)
        cold, warm = random_rates(path, clips, args.sequence_length, size, args.resize_mode)
        rates = {"ffmpeg": ffmpeg_rate(path, frames), "sequential": sequential, "random": cold, "warm": warm}
        best = {key: max(best[key], rates[key]) for key in best}
    capture = cv2.VideoCapture(path)
    shape = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
    capture.release()
    return {"name": os.path.basename(path), "shape": shape, "frames": frames, "clips": clips, **best}


def measure_memory(path: str, clips: int, sequence_length: int, size: tuple, mode: str) -> dict:
    """Peak numpy allocations and resident-memory growth while a fresh dataset draws ``clips`` samples."""
    resettable = reset_peak_rss()
    before = rss_mib()
    tracemalloc.start()
    dataset = VideoDataset([path], sequence_length, size, seed=0, resize_mode=mode)
    for k in range(clips):
        dataset[k]
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = rss_mib("VmHWM") - before if resettable else rss_mib() - before
    height, width = decoded_size(probe_video(path)[2], size, mode)  # cached frames: before the crop
    bound = dataset.reader.cache_frames * height * width * 3 / 2**20
    dataset.reader.close()
    return {"name": os.path.basename(path), "traced": traced_peak / 2**20, "rss": growth, "bound": bound,
            "rss_kind": "high-water" if resettable else "current"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=400, help="clips drawn per pass (default 400)")
    parser.add_argument("--long-clips", type=int, default=800,
                        help="clips drawn per pass from the looped long video (default 800: several chunk groups)")
    parser.add_argument("--loops", type=int, default=16,
                        help="times bikes.mp4 is looped into the long video; 0 leaves it out (default 16: 4000 frames, twice the default frame cache)")
    parser.add_argument("--folder-videos", type=int, default=16,
                        help="videos in the folder whose training stream is measured (default 16)")
    parser.add_argument("--folder-clips", type=int, default=800,
                        help="clips drawn from the folder per pass (default 800)")
    parser.add_argument("--sequence-length", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=128, help="square training resolution (default 128)")
    parser.add_argument("--resize-mode", choices=RESIZE_MODES, default="crop",
                        help="data_args.resize_mode of the loader and the sequential read (default crop)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats, best kept (default 2)")
    parser.add_argument("--videos", nargs="+", help="your own videos instead of the built-in clips")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    size = (args.size, args.size)
    videos = args.videos or sample_video_files("train")
    named = {os.path.basename(v): v for v in videos}
    memory_clip = named.get("bigbuckbunny.mp4")
    # Memory first, while the process's high-water mark still reflects nothing else.
    memory = None
    if memory_clip:
        memory = measure_memory(memory_clip, args.clips, args.sequence_length, size, args.resize_mode)

    with tempfile.TemporaryDirectory() as folder:
        runs = [(path, args.clips) for path in videos]
        if args.loops > 0 and "bikes.mp4" in named:
            runs.append((loop_video(named["bikes.mp4"], args.loops, folder), args.long_clips))
        results = [measure_rates(path, clips, args, size) for path, clips in runs]
        folder_videos = args.videos if args.videos and len(args.videos) > 1 else \
            copy_video(named.get("bikes.mp4", videos[0]), folder, args.folder_videos)
        observed, expected = distinct_files(folder_videos, args.sequence_length, 4096)
        stream = folder_rates(folder_videos, args.folder_clips, args, size)

    write(f"VideoDataset: clips of {args.sequence_length} frames at {args.size}x{args.size} "
          f"(resize_mode {args.resize_mode}), default frame cache; best of {args.repeats} alternating runs; "
          "rates in frames/s")
    headers = ["video", "size", "frames", "clips", "ffmpeg", "sequential", "random (cold)", "warm",
               "random/sequential"]
    rows = [[r["name"], r["shape"], r["frames"], r["clips"], r["ffmpeg"], r["sequential"], r["random"], r["warm"],
             r["random"] / r["sequential"]] for r in results]
    write(format_table(headers, rows))
    if memory:
        write()
        write(f"Loader memory, {memory['name']}, {args.clips} clips of {args.sequence_length} frames "
              f"at {args.size}x{args.size} (MiB)")
        write(format_table(["video", "numpy peak (tracemalloc)", f"RSS growth ({memory['rss_kind']})",
                            "frame cache bound"],
                           [[memory["name"], memory["traced"], memory["rss"], memory["bound"]]]))
    write()
    write(f"Training stream over a folder of {len(folder_videos)} videos: distinct files among {WINDOW} "
          f"consecutive clips (mean over 4096 samples), {args.folder_clips} clips per timed pass")
    diversity, speed = observed / expected, stream["random"] / stream["sequential"]
    write(format_table(["videos", f"files per {WINDOW} clips", "i.i.d.", "diversity ratio", "sequential",
                        "random (cold)", "random/sequential"],
                       [[len(folder_videos), f"{observed:.2f}", f"{expected:.2f}", diversity, stream["sequential"],
                         stream["random"], speed]]))
    worst = min(results, key=lambda r: r["random"] / r["sequential"])
    ratio = worst["random"] / worst["sequential"]
    write()
    write(f"headline: random-clip rate / sequential rate = {ratio:.2f} (worst: {worst['name']}; "
          f"target >= {TARGET}: {_verdict(ratio)})")
    write(f"headline: files per {WINDOW} clips / i.i.d. = {diversity:.2f} ({_verdict(diversity)}), "
          f"beside random/sequential = {speed:.2f} on the same folder ({_verdict(speed)})")
    return 0


def _verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
