"""Every statistic that decides restarts is in the checkpoint; upstream Taming files without it still load."""
import pytest
import torch
import torch.nn.functional as F

from core.config_schema import ConfigError
from models.builders import config_from_dict, create_model, load_config
from models.loaders import check_compatible
from models.taming.checkpoint_loading import load_upstream_weights
from tests.helpers import real_frames
from tests.test_quantizers import TAMING_ARGS


def taming(model_type="TamingVQGAN", **model_args):
    torch.manual_seed(0)
    return create_model(config_from_dict({"model_type": model_type, "data_args": {"resolution": 32},
                                          "model_args": {**TAMING_ARGS, **model_args}}))


def train(adapter, frames, steps):
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.05)  # no optimizer state to carry
    for _ in range(steps):
        out = adapter(frames)
        optimizer.zero_grad()
        (F.mse_loss(out.recon, frames) + out.vq_loss).backward()
        optimizer.step()


@pytest.mark.parametrize("model_type", ["TamingVQGAN", "EMAVQ"])
def test_taming_resumes_exactly_with_restarts_on(model_type):
    """Issue: ``code_usage`` was not saved, so restarts (and every tensor) diverged after a resume."""
    frames = real_frames(4, 32)
    straight = taming(model_type, dead_code_threshold=1.0).train()
    assert "quantize.code_usage" in straight.state_dict()
    train(straight, frames, 3)
    resumed = taming(model_type, dead_code_threshold=1.0).train()
    resumed.load_state_dict(straight.state_dict())
    for model in (straight, resumed):
        torch.manual_seed(1)
        train(model, frames, 3)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_upstream_files_without_usage_load_and_other_keys_stay_strict(tmp_path):
    adapter = taming(dead_code_threshold=1.0)
    upstream = {k: v for k, v in adapter.state_dict().items() if k != "quantize.code_usage"}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": upstream}, path)
    assert load_upstream_weights(taming(dead_code_threshold=1.0), str(path)).model_keys == len(upstream)
    torch.save({"state_dict": {k: v for k, v in upstream.items() if k != "quantize.embedding.weight"}}, path)
    with pytest.raises(ConfigError, match="missing 1 \\(quantize.embedding.weight\\)"):
        load_upstream_weights(taming(dead_code_threshold=1.0), str(path))


def test_taming_keys_stay_upstreams_without_restarts():
    assert "quantize.code_usage" not in taming().state_dict()
    assert [k for k in taming("EMAVQ").state_dict() if k.startswith("quantize.")] == [
        "quantize.embedding.weight", "quantize.embedding.cluster_size", "quantize.embedding.embed_avg"]


def test_a_checkpoint_from_before_the_usage_statistic_still_fits_and_loads():
    model = create_model(load_config("param.json"))
    assert "quantizer.usage" in model.state_dict()
    older = {k: v for k, v in model.state_dict().items() if k != "quantizer.usage"}
    check_compatible({"state_dict": older, "model_type": "VqVae2"}, model, "VqVae2", "old.pth.tar")
    model.load_state_dict(older)
    with pytest.raises(Exception, match="missing keys"):
        check_compatible({"state_dict": {k: v for k, v in older.items() if k != "quantizer.codebook"}},
                         model, "VqVae2", "old.pth.tar")
