"""Validation metrics (PSNR, SSIM, LPIPS, FID, temporal error, codebook usage)."""
from metric_utils.metric_utils import Metrics, psnr, psnr_from_mse, resolve_metric_weights, ssim, temporal_error

__all__ = ["Metrics", "psnr", "psnr_from_mse", "resolve_metric_weights", "ssim", "temporal_error"]
