"""Validation metrics: PSNR, SSIM, LPIPS, FID, temporal error, codebook usage.

Per-batch numbers come from ``Metrics.compute_all``; the numbers that only mean
something over a whole pass (FID, codebook usage, the perplexity of the code
histogram) are accumulated and read once from ``Metrics.finalize``.
"""
import logging
import math
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torchmetrics.functional.image import structural_similarity_index_measure

from metric_utils.fid import build_fid_inception, frechet_distance, inception_features
from core.indices import Indices, as_level_list
from core.pixels import to_model_range, to_pixel_range
from core.pretrained import FID_INCEPTION_FILE, VGG16_FILE, find_weights, missing_message, require_weights
from metric_utils.codebook import code_histogram, perplexity_from_counts, usage_from_counts

MAX_PSNR_DB = 100.0  # identical frames: a finite number that JSON and plots can hold


def resolve_metric_weights(train_args, logger: logging.Logger) -> tuple:
    """``(use_fid, use_lpips)`` from ``compute_fid`` / ``compute_lpips`` ('auto', true, false).

    'auto' with missing weights logs one warning (which file, where it goes, which key)
    and turns the metric off; true with missing weights raises ``WeightsMissingError``.
    Nothing is downloaded.
    """
    use_fid = _resolve(
        train_args.compute_fid, "FID (Inception)", FID_INCEPTION_FILE,
        "train_args.fid_weights", train_args.fid_weights, logger,
    )
    if train_args.perceptual_backbone == "random":
        use_lpips = train_args.compute_lpips is not False  # no weights needed
    else:
        use_lpips = _resolve(
            train_args.compute_lpips, "LPIPS (VGG16 backbone)", VGG16_FILE,
            "train_args.vgg_weights", train_args.vgg_weights, logger,
        )
    return use_fid, use_lpips


def _resolve(setting, what: str, filename: str, key: str, explicit: Optional[str], logger) -> bool:
    if setting is False:
        return False
    if setting is True:
        require_weights(what, filename, key, explicit)
        return True
    if find_weights(filename, explicit) is None:
        logger.warning("%s; the metric is skipped", missing_message(what, filename, key, explicit))
        return False
    return True


def psnr_from_mse(mse):
    """PSNR in dB of a mean squared error of [0, 1] pixels (tensor or float), capped at ``MAX_PSNR_DB``."""
    floor = 10 ** (-MAX_PSNR_DB / 10)
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(1.0 / mse.clamp_min(floor))
    return 10 * math.log10(1.0 / max(float(mse), floor))


def psnr(pixels: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over frames of each frame's PSNR, for ``(N, C, H, W)`` pixels in [0, 1]."""
    mse = (pixels.float() - reference.float()).pow(2).flatten(1).mean(dim=1)
    return float(psnr_from_mse(mse).mean())


def ssim(pixels: torch.Tensor, reference: torch.Tensor) -> float:
    """torchmetrics SSIM of ``(N, C, H, W)`` pixels in [0, 1]; the window shrinks for tiny frames."""
    kernel = min(11, 2 * (min(pixels.shape[-2:]) // 2) - 1)
    return float(structural_similarity_index_measure(
        pixels.float(), reference.float(), data_range=1.0, kernel_size=kernel))


def temporal_error(pixels: torch.Tensor, reference: torch.Tensor, d: int) -> Optional[float]:
    """MSE between reconstructed and original frame differences within each clip of ``d`` frames.

    Flicker and lost motion show here even when every frame alone looks right.
    ``None`` for single frames (images).
    """
    if d < 2:
        return None
    motion = rearrange(pixels.float(), "(b d) c h w -> b d c h w", d=d).diff(dim=1)
    motion_ref = rearrange(reference.float(), "(b d) c h w -> b d c h w", d=d).diff(dim=1)
    return float(F.mse_loss(motion, motion_ref))


class Metrics:
    """Validation metrics of one pass: ``reset()``, ``compute_all()`` per batch, ``finalize()``."""

    def __init__(
        self,
        device,
        vocab_sizes: list,
        unnormalize: Callable[[torch.Tensor], torch.Tensor] = to_pixel_range,
        use_fid: bool = False,
        lpips: Optional[torch.nn.Module] = None,
        fid_weights: Optional[str] = None,
        fid_random_weights: bool = False,
    ):
        self.device = torch.device(device)
        self.vocab_sizes = list(vocab_sizes)
        self.unnormalize = unnormalize
        self.inception = (
            build_fid_inception(fid_weights, random_weights=fid_random_weights).to(self.device)
            if use_fid else None
        )
        self.lpips = lpips  # the frozen LPIPS network (shared with the perceptual loss), or None
        self.reset()

    def reset(self) -> None:
        """Forget the previous pass (call at the start of every validation pass)."""
        self._orig_features: list = []
        self._recon_features: list = []
        self._histograms = [torch.zeros(v, dtype=torch.float64) for v in self.vocab_sizes]
        self._codes_seen = False

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames -> [0, 1] pixels, as the eye (and 8-bit video) sees them."""
        return self.unnormalize(frames.detach()).clamp(0, 1)

    @torch.no_grad()
    def compute_all(
        self,
        orig: torch.Tensor,
        recon: torch.Tensor,
        recon_mse=None,
        perplexity=None,
        encoding_indices: Optional[Indices] = None,
        b: int = 1,
        d: int = 1,
        compute_fid_lpips: bool = True,
    ) -> dict:
        """Per-batch metrics of ``(b*d, C, H, W)`` normalised frames; accumulates the pass statistics.

        Returns 'psnr', 'ssim', 'temporal' (``None`` when ``d == 1``), 'lpips' when enabled,
        and 'mse' (``recon_mse`` as a float) when given. The arguments keep the design
        document's call: ``b`` is implied by the shape, and the batch ``perplexity`` is
        superseded by the pass histogram's in ``finalize`` (which does not depend on the
        batch size). ``compute_fid_lpips=False`` skips the two costly networks.
        """
        orig_px, recon_px = self._pixels(orig), self._pixels(recon)
        out = {
            "psnr": psnr(recon_px, orig_px),
            "ssim": ssim(recon_px, orig_px),
            "temporal": temporal_error(recon_px, orig_px, d),
        }
        if recon_mse is not None:
            out["mse"] = float(recon_mse)
        if compute_fid_lpips and self.lpips is not None:
            out["lpips"] = float(self.lpips(to_model_range(recon_px), to_model_range(orig_px)).mean())
        if compute_fid_lpips and self.inception is not None:
            self._orig_features.append(inception_features(self.inception, orig_px))
            self._recon_features.append(inception_features(self.inception, recon_px))
        self._count_codes(encoding_indices)
        return out

    def _count_codes(self, encoding_indices: Optional[Indices]) -> None:
        levels = as_level_list(encoding_indices)
        if not levels:
            return
        if len(levels) != len(self.vocab_sizes):
            raise ValueError(f"got code indices for {len(levels)} levels, expected {len(self.vocab_sizes)} "
                             f"(vocab_sizes = {self.vocab_sizes})")
        for hist, indices, vocab in zip(self._histograms, levels, self.vocab_sizes):
            hist += code_histogram(indices.detach(), vocab).double().cpu()
        self._codes_seen = True

    def finalize(self) -> dict:
        """Pass-level metrics: FID, codebook usage and histogram perplexity (mean and per level)."""
        out = {"fid": self._fid()}
        usages = [usage_from_counts(h) for h in self._histograms] if self._codes_seen else []
        perplexities = [float(perplexity_from_counts(h)) for h in self._histograms] if self._codes_seen else []
        out["codebook_usage"] = float(np.mean(usages)) if usages else None
        out["perplexity"] = float(np.mean(perplexities)) if perplexities else None
        for level, (usage, perplexity) in enumerate(zip(usages, perplexities)):
            out[f"codebook_usage/level{level}"] = usage
            out[f"perplexity/level{level}"] = perplexity
        return out

    def _fid(self) -> Optional[float]:
        if self.inception is None or sum(len(f) for f in self._orig_features) < 2:
            return None
        orig, recon = (torch.cat(feats).double().numpy() for feats in (self._orig_features, self._recon_features))
        return frechet_distance(orig, recon)
