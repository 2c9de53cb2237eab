"""Run logging: log file, metrics.jsonl, PNG grids, wandb offline, plots, architecture report."""
import json
import logging
import math
import sys

import pytest
import torch
from torch import nn
from torchvision.io import read_image

from log_utils.log_utils import (ERROR_GAIN, GRID_BORDER, GRID_CLIPS, GRID_GAP, GRID_HEADER, GRID_MIN_SIZE, LogManager,
                                 build_id_name, frame_psnr, reconstruction_grid)
from metric_utils.metric_utils import psnr
from log_utils.plot import main as plot_main
from log_utils.plot import plot_run
from models.adapter_base import BaseVqVaeAdapter, VQOutput
from metric_utils.codebook import perplexity_from_indices
from models.quantizers.functional import flatten_channels_last, l2_distances
from models.architecture import analyze_model_architecture
from core.config import Config
from core.config_schema import structure


def unnormalize(x):
    return x * 0.5 + 0.5


@pytest.fixture
def log_mgr(tmp_path):
    manager = LogManager(str(tmp_path / "run"))
    yield manager
    manager.close()


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_metrics_jsonl_holds_one_object_per_logged_step(log_mgr):
    log_mgr.log_metrics(10, {"train/loss/total": torch.tensor(0.5), "train/lr": 1e-4})
    log_mgr.log_metrics(20, {"val/stats/psnr": 31.5, "val/stats/fid": None})
    records = read_jsonl(log_mgr.metrics_path)
    assert records == [
        {"step": 10, "train/loss/total": 0.5, "train/lr": 1e-4},
        {"step": 20, "val/stats/psnr": 31.5, "val/stats/fid": None},
    ]


def test_log_file_uses_the_design_format_and_keeps_debug_lines(tmp_path):
    manager = LogManager(str(tmp_path / "run"))
    manager.logger.debug("batch 3 loss 0.25")
    logging.getLogger("some.module").warning("a data file was skipped")
    manager.close()
    text = open(manager.log_file, encoding="utf-8").read()
    assert manager.log_file.startswith(str(tmp_path / "run" / "training_"))
    assert " - vqvc - DEBUG - batch 3 loss 0.25" in text
    assert " - some.module - WARNING - a data file was skipped" in text
    assert manager.log_file not in [getattr(h, "baseFilename", None) for h in logging.getLogger().handlers]


def test_other_ranks_write_no_files(tmp_path):
    manager = LogManager(str(tmp_path / "run"), is_main=False)
    manager.log_metrics(1, {"train/loss/total": 1.0})
    assert manager.log_images(1, torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), 1, 2, unnormalize) is None
    manager.close()
    assert not (tmp_path / "run").exists()


def test_reconstruction_grid_rows_are_clips_original_reconstruction_and_amplified_error(log_mgr):
    b, d, h, w = 5, 3, 16, 12  # five clips, of which the grid shows four
    images = torch.rand(b * d, 3, h, w) * 2 - 1
    recon = (images + 0.1 * torch.randn_like(images)).clamp(-1, 1)
    path = log_mgr.log_images(40, images, recon, b, d, unnormalize, n_show=4, tag="val")
    assert path.endswith("images/val_step0000040.png")
    png = read_image(path)
    scale = math.ceil(GRID_MIN_SIZE / min(h, w))  # 12 px frames enlarged to >= 128 px, nearest
    cell_h, cell_w = h * scale + 2 * GRID_BORDER, w * scale + 2 * GRID_BORDER
    assert png.shape == (3, GRID_HEADER + GRID_CLIPS * cell_h, 3 * d * cell_w + 2 * GRID_GAP)

    def frame_at(panel, clip, frame):  # the enlarged frame, back at its own size
        top = GRID_HEADER + clip * cell_h + GRID_BORDER
        left = panel * (d * cell_w + GRID_GAP) + frame * cell_w + GRID_BORDER
        return png[:, top:top + h * scale:scale, left:left + w * scale:scale]

    to_png = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    original = unnormalize(images[3 * d + 2])  # clip 3, frame 2
    error = ((original - unnormalize(recon[3 * d + 2])).abs() * ERROR_GAIN).clamp(0, 1)
    assert torch.equal(frame_at(0, 3, 2), to_png(original))
    assert torch.equal(frame_at(2, 3, 2), to_png(error))
    assert (png[:, :GRID_HEADER] < 128).any()  # the step and legend are written above
    recon_frame = frame_at(1, 3, 2).float()  # the PSNR label covers its top-left corner only
    assert (recon_frame[:, h // 2:] - to_png(unnormalize(recon[3 * d + 2]))[:, h // 2:].float()).abs().max() <= 1


def test_frame_psnr_is_the_metric_of_each_frame():
    orig, recon = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 3, 8, 8)
    values = frame_psnr(recon, orig)
    assert values.shape == (2, 3)
    assert values[1, 2].item() == pytest.approx(psnr(recon[1, 2:3], orig[1, 2:3]), abs=1e-4)


def test_image_batches_show_one_image_per_row():
    images = torch.zeros(6, 3, 8, 8)
    grid = reconstruction_grid(images, images, d=1, unnormalize=unnormalize, n_show=4)
    cell = 8 * 16 + 2 * GRID_BORDER
    assert grid.shape == (3, GRID_HEADER + GRID_CLIPS * cell, 3 * cell + 2 * GRID_GAP)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    yield wandb
    wandb.teardown()  # no-op after LogManager.close(); stops the service if a test failed early


def test_wandb_offline_run_records_the_logged_keys(tmp_path, offline_wandb, caplog):
    wandb_dir = tmp_path / "wandb_runs"
    with caplog.at_level(logging.INFO, logger="vqvc"):
        manager = LogManager(str(tmp_path / "run"), use_wandb=True, project_name="vqvc-test",
                             config={"lr": 1e-4}, id_name="tiny-run-1", wandb_dir=str(wandb_dir))
    assert manager.run_wandb is not None
    manager.log_metrics(5, {"train/loss/total": 0.75})
    manager.log_images(5, torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), 1, 2, unnormalize)
    manager.close()
    run_dirs = list((wandb_dir / "wandb").glob("offline-run-*-tiny-run-1"))
    assert len(run_dirs) == 1
    history = (run_dirs[0] / "run-tiny-run-1.wandb").read_bytes()
    assert b"train/loss/total" in history and b"viz/recon-original" in history
    assert any("wandb sync" in r.getMessage() for r in caplog.records)
    assert read_jsonl(manager.metrics_path) == [{"step": 5, "train/loss/total": 0.75}]


def test_missing_wandb_is_a_warning_and_local_logging_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with caplog.at_level(logging.WARNING, logger="vqvc"):
        manager = LogManager(str(tmp_path / "run"), use_wandb=True)
    manager.log_metrics(1, {"train/loss/total": 2.0})
    manager.close()
    assert manager.run_wandb is None
    assert any("wandb is not installed" in r.getMessage() for r in caplog.records)
    assert read_jsonl(manager.metrics_path) == [{"step": 1, "train/loss/total": 2.0}]


def make_config(lr=1e-4, model_args=None):
    return structure(Config, {
        "model_type": "VqVae2",
        "model_args": model_args or {"vocab_size": 512, "n_init": 64, "n_hid": 32, "group_count": 2},
        "data_args": {"batch_size": 2, "sequence_length": 4},
        "train_args": {"lr": lr, "run_name": "param"},
    }, "")


def test_build_id_name_is_deterministic_and_wandb_safe():
    name = build_id_name(make_config())
    assert name == build_id_name(make_config())
    assert name.startswith("param-VqVae2-v512-e64-h32-g2-lr0.0001-b2-s4-")
    assert all(c.isalnum() or c in "._-" for c in name) and len(name) <= 64
    assert build_id_name(make_config(lr=3e-4)) != name
    other_args = {"vocab_size": 512, "n_init": 64, "n_hid": 32, "group_count": 2, "decay": 0.9}
    assert build_id_name(make_config(model_args=other_args)) != name


def write_run(run_dir):
    manager = LogManager(str(run_dir))
    for step in range(0, 60, 10):
        manager.log_metrics(step, {
            "train/loss/total": 1.0 / (step + 1), "train/loss/recon": 0.5 / (step + 1),
            "train/loss/vq": 0.1, "train/stats/psnr": 20 + step / 10, "train/lr": 1e-4 * 0.99 ** step,
        })
        if step % 20 == 0:
            manager.log_metrics(step, {
                "val/loss/total": 1.2 / (step + 1), "val/stats/psnr": 19 + step / 10,
                "val/stats/lpips": 0.5 - step / 200, "val/stats/codebook_usage": 0.1 + step / 100,
                "val/stats/fid": None, "val/stats/ssim": math.nan,
            })
    manager.close()
    with open(manager.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 60, "train/lo')  # a line cut short by a crash


def test_plot_run_writes_non_empty_pngs_for_logged_keys_only(tmp_path, capsys):
    write_run(tmp_path)
    assert plot_main([str(tmp_path)]) == 0  # python -m log_utils.plot RUN_DIR
    paths = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == ["codebook_usage.png", "loss.png", "lpips.png", "lr.png", "psnr.png"]
    for path in paths:
        png = read_image(path)
        assert png.shape[1] > 100 and png.float().std() > 0
    assert sorted(plot_run(str(tmp_path))) == sorted(paths)
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path / "no_such_run")])


class TinyVQ(nn.Module):
    """1x1-conv encoder (stride 4), an EMA-style codebook, a transposed-conv decoder."""

    def __init__(self, vocab_size=8, dim=4):
        super().__init__()
        self.encoder = nn.Conv2d(3, dim, 1, stride=4)  # 16 parameters
        self.codebook = nn.Embedding(vocab_size, dim)  # 32, updated by EMA, not the optimizer
        self.codebook.weight.requires_grad_(False)
        self.register_buffer("cluster_size", torch.zeros(vocab_size))  # 8
        self.register_buffer("embed_avg", torch.zeros(vocab_size, dim))  # 32
        self.decoder = nn.ConvTranspose2d(dim, 3, 4, stride=4)  # 4*3*16 + 3 = 195

    def quantize(self, z):
        indices = l2_distances(flatten_channels_last(z), self.codebook.weight).argmin(dim=1)
        return indices.view(z.shape[0], *z.shape[2:])


class TinyAdapter(BaseVqVaeAdapter):
    args_class = dict

    def __init__(self):
        super().__init__(args={})
        self.model = TinyVQ()

    def forward(self, x):
        indices = self.encode(x)
        return VQOutput(torch.zeros(()), self.decode(indices), perplexity_from_indices(indices, 8), indices)

    def encode(self, x):
        return self.model.quantize(self.model.encoder(x))

    def decode(self, indices):
        return self.model.decoder(self.model.codebook(indices).permute(0, 3, 1, 2))

    @property
    def last_layer(self):
        return self.model.decoder.weight

    @property
    def quantizers(self) -> list:
        return []  # a hand-made lookup, no quantizer modules: its alphabet is given below

    @property
    def vocab_sizes(self):
        return [8]

    @property
    def spatial_factor(self):
        return 4


def test_architecture_report_separates_trainable_parameters_from_buffers(tmp_path):
    path = tmp_path / "run" / "architecture.txt"
    summary = analyze_model_architecture(TinyAdapter(), (4, 3, 16, 16), str(path), logging.getLogger("test"))
    assert summary["trainable_params"] == 16 + 195
    assert summary["frozen_params"] == 32
    assert summary["buffer_elements"] == 8 + 32
    assert summary["modules"] == {"(whole model)": 243, "encoder": 16, "codebook": 32, "decoder": 195}
    assert summary["latent_shapes"] == [(4, 4, 4)]
    assert summary["bits_per_frame"] == pytest.approx(16 * 3)  # 4x4 codes of log2(8) bits
    assert summary["compression_ratio"] == pytest.approx(16 * 16 * 3 * 8 / 48)
    text = path.read_text()
    assert "Trainable parameters: 211" in text and "Buffer elements:      40" in text
    assert "level 0: shape (4, 4, 4), vocabulary 8" in text
