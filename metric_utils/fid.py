"""FID with pytorch-fid's Inception network, built offline.

pytorch-fid's builder always fetches its weights from the internet; here the same
architecture is built with random weights and the weights file is read from disk
(the torch hub cache or ``train_args.fid_weights``).
"""
from typing import Optional
from unittest import mock

import numpy as np
import torch
from pytorch_fid import inception as fid_inception
from scipy import linalg

from core.pretrained import FID_INCEPTION_FILE, load_state_dict_file, require_weights

FID_DIMS = 2048  # pytorch-fid's default: the final average-pooling features


def fid_inception_architecture() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` (TF-ported blocks) with random weights, no download."""
    net = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return net


def build_fid_inception(weights: Optional[str] = None, random_weights: bool = False) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` (2048-d pool features) in eval mode.

    Reads ``pt_inception-2015-12-05-6726825d.pth`` from ``weights`` or the hub cache;
    ``random_weights=True`` skips it (tests only: the distances are then meaningless).
    """
    net = fid_inception_architecture()
    if random_weights:
        # Variance-preserving init, so random features are O(1) rather than ~1e-8.
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    else:
        path = require_weights("FID (Inception)", FID_INCEPTION_FILE, "train_args.fid_weights", weights)
        net.load_state_dict(load_state_dict_file(path))
    # InceptionV3 asks the module-level builder for its backbone; hand it ours.
    with mock.patch.object(fid_inception, "fid_inception_v3", lambda: net):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]])
    return model.eval()


@torch.no_grad()
def inception_features(model: torch.nn.Module, pixels: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """``(N, 3, H, W)`` frames in [0, 1] -> ``(N, 2048)`` float32 features on the CPU."""
    feats = [model(part)[0].flatten(1) for part in pixels.split(chunk)]
    return torch.cat(feats).float().cpu()


def _covariance_factor(feats: np.ndarray) -> np.ndarray:
    """A matrix ``B`` with ``B.T @ B`` = the covariance of ``feats`` and at most ``min(n, dims)`` rows."""
    n, dims = feats.shape
    centered = feats - feats.mean(axis=0)
    if n <= dims:
        return centered / np.sqrt(n - 1)
    eigvals, eigvecs = linalg.eigh(centered.T @ centered / (n - 1))
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))).T


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    ``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2)``, the quantity of
    ``pytorch_fid.fid_score.calculate_frechet_distance``. With ``S = B.T B``, the last
    trace is the nuclear norm of ``B2 B1.T``: exact, and far cheaper than
    ``scipy.linalg.sqrtm`` of a 2048x2048 product (about 20 s on one CPU core).
    """
    b1, b2 = _covariance_factor(feats1), _covariance_factor(feats2)
    mean_term = np.sum((feats1.mean(axis=0) - feats2.mean(axis=0)) ** 2)
    trace_sqrt = linalg.svdvals(b2 @ b1.T).sum()
    return float(mean_term + np.sum(b1**2) + np.sum(b2**2) - 2 * trace_sqrt)
