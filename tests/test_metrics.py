"""Validation metrics: PSNR, SSIM, LPIPS, temporal error, FID, codebook usage, weight resolution."""
import logging
import math

import lpips
import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from metric_utils.fid import build_fid_inception, fid_inception_architecture, frechet_distance
from metric_utils.metric_utils import Metrics, resolve_metric_weights
from core.pretrained import FID_INCEPTION_FILE, VGG16_FILE, WeightsMissingError, lpips_linear_weights_path
from core.config import TrainArgs
from models.perceptual import build_lpips


def unnormalize(x):
    return x * 0.5 + 0.5


def normalize(pixels):
    return pixels * 2 - 1


def make_metrics(vocab_sizes=(8,), **kwargs):
    options = {"use_fid": False, **kwargs}
    return Metrics("cpu", list(vocab_sizes), unnormalize, **options)


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(0)
    return torch.rand(4, 3, 32, 32)  # [0, 1] pixels


def noisy(pixels, sigma):
    generator = torch.Generator().manual_seed(1)
    return (pixels + sigma * torch.randn(pixels.shape, generator=generator)).clamp(0, 1)


def test_psnr_is_the_mean_of_per_frame_psnr_on_unit_pixels():
    orig = torch.full((2, 3, 8, 8), 0.5)
    recon = orig.clone()
    recon[0] += 0.1  # MSE 0.01 -> 20 dB
    recon[1] += 0.01  # MSE 0.0001 -> 40 dB
    out = make_metrics().compute_all(normalize(orig), normalize(recon), b=2, d=1)
    assert out["psnr"] == pytest.approx(30.0, abs=1e-3)


def test_psnr_of_identical_frames_is_finite():
    orig = torch.rand(2, 3, 8, 8)
    assert make_metrics().compute_all(normalize(orig), normalize(orig))["psnr"] == pytest.approx(100.0)


def test_ssim_is_one_on_identical_frames_and_falls_with_noise(frames):
    metrics = make_metrics()
    scores = [metrics.compute_all(normalize(frames), normalize(noisy(frames, s)))["ssim"] for s in (0, 0.05, 0.2)]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > scores[1] > scores[2]


def test_lpips_is_zero_on_identical_frames_and_grows_with_noise(frames):
    torch.manual_seed(0)
    metrics = make_metrics(lpips=build_lpips("random"))
    scores = [metrics.compute_all(normalize(frames), normalize(noisy(frames, s)))["lpips"] for s in (0, 0.05, 0.3)]
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[0] < scores[1] < scores[2]
    assert "lpips" not in metrics.compute_all(normalize(frames), normalize(frames), compute_fid_lpips=False)


def test_temporal_error_sees_flicker_but_not_a_constant_offset():
    torch.manual_seed(0)
    clips = torch.rand(2 * 4, 3, 16, 16) * 0.5 + 0.25  # b=2 clips of d=4 frames
    offset = clips + 0.1  # same motion
    flicker = clips + 0.1 * torch.tensor([1.0, -1.0, 1.0, -1.0] * 2).view(-1, 1, 1, 1)
    metrics = make_metrics()
    assert metrics.compute_all(normalize(clips), normalize(offset), b=2, d=4)["temporal"] == pytest.approx(0, abs=1e-10)
    flicker_error = metrics.compute_all(normalize(clips), normalize(flicker), b=2, d=4)["temporal"]
    assert flicker_error == pytest.approx(0.2**2, rel=1e-4)  # every difference is off by 0.2
    assert metrics.compute_all(normalize(clips), normalize(clips), b=8, d=1)["temporal"] is None


def test_fid_is_zero_against_itself_and_grows_with_a_shift(frames):
    torch.manual_seed(0)
    metrics = make_metrics(use_fid=True, fid_random_weights=True)
    fids = []
    for shift in (0.0, 0.1, 0.4):
        metrics.reset()
        shifted = (frames + shift).clamp(0, 1)
        metrics.compute_all(normalize(frames[:2]), normalize(shifted[:2]))  # accumulated over the pass
        metrics.compute_all(normalize(frames[2:3]), normalize(shifted[2:3]))
        fids.append(metrics.finalize()["fid"])
    assert abs(fids[0]) < 1e-6
    assert fids[0] < fids[1] < fids[2]
    metrics.reset()
    metrics.compute_all(normalize(frames[:1]), normalize(frames[:1]))
    assert metrics.finalize()["fid"] is None  # a covariance needs two samples


def test_fid_is_none_when_disabled(frames):
    metrics = make_metrics()
    metrics.compute_all(normalize(frames), normalize(frames))
    assert metrics.finalize()["fid"] is None


def test_frechet_distance_matches_pytorch_fid_on_both_paths():
    rng = np.random.default_rng(0)
    for n in (6, 40):  # fewer samples than dimensions, and more
        a = rng.normal(size=(n, 16))
        b = rng.normal(size=(n + 3, 16)) * 1.5 + 0.3
        reference = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
        assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


def test_fid_inception_loads_a_weights_file(tmp_path):
    torch.manual_seed(3)
    source = fid_inception_architecture()
    path = tmp_path / FID_INCEPTION_FILE
    torch.save(source.state_dict(), path)
    loaded = build_fid_inception(str(path))
    conv = loaded.blocks[0][0].conv.weight  # Conv2d_1a_3x3
    assert torch.equal(conv, source.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(loaded.blocks[3][2].branch_pool.conv.weight, source.Mixed_7c.branch_pool.conv.weight)
    assert not loaded.training
    with pytest.raises(WeightsMissingError, match="fid_weights"):
        build_fid_inception(str(tmp_path / "absent.pth"))


def test_codebook_usage_and_perplexity_over_a_pass():
    metrics = make_metrics(vocab_sizes=(8,))
    frames = torch.zeros(2, 3, 8, 8)
    metrics.compute_all(frames, frames, encoding_indices=torch.tensor([[0, 0], [1, 1]]))
    metrics.compute_all(frames, frames, encoding_indices=torch.tensor([2, 3]))
    out = metrics.finalize()
    probs = np.array([2, 2, 1, 1]) / 6
    assert out["codebook_usage"] == pytest.approx(4 / 8)
    assert out["perplexity"] == pytest.approx(math.exp(-(probs * np.log(probs)).sum()), rel=1e-5)
    assert out["codebook_usage/level0"] == out["codebook_usage"]
    metrics.reset()
    assert metrics.finalize()["codebook_usage"] is None


def test_codebook_statistics_per_level():
    metrics = make_metrics(vocab_sizes=(4, 16))
    frames = torch.zeros(1, 3, 8, 8)
    bottom = torch.arange(4).repeat(3)  # every code, evenly
    top = torch.full((2, 2), 5)  # one code
    metrics.compute_all(frames, frames, encoding_indices=[bottom, top])
    out = metrics.finalize()
    assert out["codebook_usage/level0"] == pytest.approx(1.0)
    assert out["codebook_usage/level1"] == pytest.approx(1 / 16)
    assert out["perplexity/level0"] == pytest.approx(4.0, rel=1e-5)
    assert out["perplexity/level1"] == pytest.approx(1.0, rel=1e-5)
    assert out["codebook_usage"] == pytest.approx((1 + 1 / 16) / 2)
    assert out["perplexity"] == pytest.approx(2.5, rel=1e-5)
    with pytest.raises(ValueError, match="1 levels, expected 2"):
        metrics.compute_all(frames, frames, encoding_indices=bottom)


def test_auto_with_missing_weights_warns_once_per_metric_and_turns_off(tmp_path, caplog):
    args = TrainArgs(fid_weights=str(tmp_path / "no_inception.pth"), vgg_weights=str(tmp_path / "no_vgg.pth"))
    logger = logging.getLogger("test_metrics")
    with caplog.at_level(logging.WARNING, logger="test_metrics"):
        assert resolve_metric_weights(args, logger) == (False, False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "train_args.fid_weights" in warnings[0] and FID_INCEPTION_FILE in warnings[0]
    assert "train_args.vgg_weights" in warnings[1] and VGG16_FILE in warnings[1]


def test_required_metric_with_missing_weights_stops_at_start(tmp_path):
    args = TrainArgs(compute_fid=True, fid_weights=str(tmp_path / "no_inception.pth"), compute_lpips=False)
    with pytest.raises(WeightsMissingError, match="train_args.fid_weights"):
        resolve_metric_weights(args, logging.getLogger("test_metrics"))


def test_present_weights_and_random_backbone_turn_metrics_on(tmp_path):
    weights = tmp_path / FID_INCEPTION_FILE
    weights.write_bytes(b"")  # only existence is checked at start-up
    args = TrainArgs(compute_fid=True, fid_weights=str(weights), perceptual_backbone="random")
    assert resolve_metric_weights(args, logging.getLogger("test_metrics")) == (True, True)
    off = TrainArgs(compute_fid=False, compute_lpips=False, fid_weights=str(weights))
    assert resolve_metric_weights(off, logging.getLogger("test_metrics")) == (False, False)


def test_the_lpips_network_computes_what_the_lpips_package_computes():
    ours = build_lpips("random")
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False,
                            model_path=lpips_linear_weights_path())
    missing, _ = reference.load_state_dict(ours.state_dict(), strict=False)
    assert all(key.startswith("lins.") for key in missing)  # the package's aliases of lin0..lin4
    reference.eval()
    x, y = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    with torch.no_grad():
        assert torch.allclose(ours(x, y).flatten(), reference(x, y).flatten(), rtol=1e-4, atol=1e-6)
