"""One validation pass: reconstruction loss, PSNR, and the ``Metrics`` of the whole pass."""
import sys
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.runtime import autocast
from metric_utils.metric_utils import psnr_from_mse


@torch.no_grad()
def evaluate(model, loader, prepare, metrics, args, device, max_images: int = 10000, use_images: bool = False,
             keep: Optional[list] = None, keep_clips: int = 4) -> dict:
    """One pass over the validation clips; the design document's ``val/...`` keys.

    ``keep``, a list, receives ``(frames, reconstructions, d)`` of the first batches (on the
    CPU) until it holds ``keep_clips`` clips: what the reconstruction grid shows.
    """
    model.eval()
    if metrics is not None:
        metrics.reset()
    sums, count, images_seen = {}, 0, 0
    batches = loader
    wanted = args.progress_bar
    if (sys.stderr.isatty() if wanted == "auto" else wanted):
        batches = tqdm(batches, desc="validate", unit="batch", leave=False, dynamic_ncols=True)
    for images, _paths in batches:
        images, b, d = prepare(images)
        with autocast(args.precision, device):
            out = model(images)
        recon = out.recon.float()
        if keep is not None and sum(len(kept) // d for kept, _, _ in keep) < keep_clips:
            keep.append((images.detach().cpu(), recon.detach().cpu(), d))
        recon_error = F.mse_loss(recon, images)
        values = {"loss": (recon_error + out.vq_loss.float()).item(), "recon": recon_error.item(),
                  "psnr": psnr_from_mse(recon_error.item() / 4)}
        if metrics is not None:
            extra = metrics.compute_all(images, recon, recon_error, out.perplexity, out.indices, b, d,
                                             compute_fid_lpips=True)
            values.update({k: v for k, v in extra.items() if k != "psnr" and v is not None})
            if use_images:  # a "sequence" of independent images has no motion
                values.pop("temporal", None)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        count += 1
        images_seen += images.shape[0]
        if images_seen >= max_images:
            break
    mean = {k: v / max(count, 1) for k, v in sums.items()}
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
