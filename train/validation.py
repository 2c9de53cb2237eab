"""One validation pass: reconstruction loss, PSNR, and the ``Metrics`` of the whole pass."""
import sys
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.runtime import autocast
from core.pixels import to_pixel_range
from metric_utils.metric_utils import psnr


@torch.no_grad()
def evaluate(model, loader, prepare, metrics, precision: str, device, max_images: int = 10000,
             use_images: bool = False, progress="auto", keep: Optional[list] = None, keep_clips: int = 4) -> dict:
    """One pass over the validation clips; the design document's ``val/...`` keys.

    ``prepare`` turns a loader batch into ``(frames, b, d)``; ``precision`` is resolved (no "auto").
    ``keep``, a list, receives ``(frames, reconstructions, d)`` of the first batches (on the
    CPU) until it holds ``keep_clips`` clips: what the reconstruction grid shows.
    """
    model.eval()
    if metrics is not None:
        metrics.reset()
    sums, images_seen = {}, 0
    batches = loader
    if sys.stderr.isatty() if progress == "auto" else progress:
        batches = tqdm(batches, desc="validate", unit="batch", leave=False, dynamic_ncols=True)
    for images, _paths in batches:
        images, b, d = prepare(images)
        with autocast(precision, device):
            out = model(images)
        recon = out.recon.float()
        if keep is not None and sum(len(kept) // d for kept, _, _ in keep) < keep_clips:
            keep.append((images.detach().cpu(), recon.detach().cpu(), d))
        recon_error = F.mse_loss(recon, images)
        # PSNR as the eye sees it: of each frame, clamped to [0, 1] (8-bit video cannot hold more)
        frames = [to_pixel_range(t).clamp(0, 1) for t in (recon, images)]
        values = {"loss": (recon_error + out.vq_loss.float()).item(), "recon": recon_error.item(),
                  "psnr": psnr(*frames)}
        if metrics is not None:
            extra = metrics.compute_all(images, recon, recon_error, out.perplexity, out.indices, b, d,
                                             compute_fid_lpips=True)
            values.update({k: v for k, v in extra.items() if k != "psnr" and v is not None})
            if use_images:  # a "sequence" of independent images has no motion
                values.pop("temporal", None)
        for key, value in values.items():  # weighted by frames: a short last batch counts for its frames
            sums[key] = sums.get(key, 0.0) + float(value) * images.shape[0]
        images_seen += images.shape[0]
        if images_seen >= max_images:
            break
    mean = {k: v / max(images_seen, 1) for k, v in sums.items()}
    result = {
        "val/loss/total": mean.get("loss"),
        "val/loss/recon": mean.get("recon"),
        "val/stats/psnr": mean.get("psnr"),
        "val/stats/ssim": mean.get("ssim"),
        "val/stats/lpips": mean.get("lpips"),
        "val/stats/temporal": mean.get("temporal"),
    }
    if metrics is not None:
        final = metrics.finalize()
        result["val/stats/fid"] = final.get("fid")
        result["val/stats/codebook_usage"] = final.get("codebook_usage")
        result["val/stats/perplexity"] = final.get("perplexity")
        result.update({f"val/stats/{k}": v for k, v in final.items() if "/level" in k})
    return {k: v for k, v in result.items() if v is not None}
