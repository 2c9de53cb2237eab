"""train_args.precision and channels_last through the real trainer, on the CPU.

bf16 autocast must leave the quantizer's math, its codebook statistics and the loss
reductions in fp32; channels_last must change the memory layout, never the numbers;
fp16 brings a GradScaler.
"""
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.helpers import tiny_config
from models.builders import config_from_dict
from train.train_custom_videos import build_trainer


class MatrixProducts(TorchFunctionMode):
    """While active, records the result dtype of every matrix product (autocast shows in it)."""

    NAMES = {"matmul", "__matmul__", "mm", "addmm", "bmm", "baddbmm", "cdist", "einsum", "linear"}

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in self.NAMES:
            self.dtypes.append(out.dtype)
        return out


def make_trainer(tmp_path, name: str, **train_args):
    data = tiny_config(tmp_path, train_args={"run_name": name, **train_args}, data_process={"train": "builtin:valid"})
    trainer = build_trainer(config_from_dict(data))
    trainer.log_mgr.close()  # detach its log handlers: these tests read no logs
    return trainer


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("clips"), "clips")
    clips, _ = next(iter(trainer.training_loader))
    return clips


def frames_of(trainer, clips: torch.Tensor) -> torch.Tensor:
    return trainer._prepare(clips)[0]


def test_bf16_step_keeps_quantizer_and_losses_in_fp32(tmp_path, clips, monkeypatch):
    trainer = make_trainer(tmp_path, "bf16", precision="bf16")
    seen = {}
    products = MatrixProducts()
    quantizer = trainer.model.model.quantizer
    quantize = quantizer.forward

    def observed_quantize(z):
        seen["quantizer_in"] = z.dtype
        with products:
            return quantize(z)

    def record_output(_module, _inputs, output):
        seen["recon"], seen["vq_loss"] = output.recon.dtype, output.vq_loss.dtype

    compute = trainer.loss_calculator.compute_total_loss

    def recording_loss(*args, **kwargs):
        losses = compute(*args, **kwargs)
        seen["total_loss"] = losses["total_loss"].dtype
        return losses

    monkeypatch.setattr(quantizer, "forward", observed_quantize)
    monkeypatch.setattr(trainer.loss_calculator, "compute_total_loss", recording_loss)
    hook = trainer.model.register_forward_hook(record_output)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        logs = trainer.train_step(frames_of(trainer, clips), 0)
    finally:
        hook.remove()

    assert logs is not None and all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    # autocast is really on: the encoder hands the quantizer bf16, the decoder returns bf16 ...
    assert seen["quantizer_in"] == torch.bfloat16 and seen["recon"] == torch.bfloat16
    # ... yet the quantizer measures distances, and the losses reduce, in fp32
    assert products.dtypes and all(dtype == torch.float32 for dtype in products.dtypes)
    assert seen["vq_loss"] == torch.float32 and seen["total_loss"] == torch.float32
    state = trainer.model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    codebook = "quantizer.codebook"
    assert codebook in state and not torch.equal(state[codebook], before[codebook])  # the EMA update ran


def test_bf16_trains_like_fp32(tmp_path, clips):
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = make_trainer(tmp_path, precision, precision=precision)
        frames = frames_of(trainer, clips)
        losses[precision] = [float(trainer.train_step(frames, step)["total_loss"]) for step in range(4)]
    assert losses["bf16"][-1] < losses["bf16"][0]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.01)


def test_channels_last_changes_layout_not_results(tmp_path, clips):
    finals, outputs = {}, {}
    for channels_last in (False, True):
        trainer = make_trainer(tmp_path, f"cl{int(channels_last)}", channels_last=channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        convs = [p for p in trainer.model.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=layout) for p in convs)
        assert channels_last == any(not p.is_contiguous() for p in convs)  # the layout really changed
        frames = frames_of(trainer, clips)
        assert frames.is_contiguous(memory_format=torch.channels_last) or not channels_last
        for step in range(3):
            trainer.train_step(frames, step)
        finals[channels_last] = trainer.model.state_dict()
        with torch.no_grad():
            outputs[channels_last] = trainer.model.eval()(frames).recon.contiguous()
    for key, value in finals[False].items():
        torch.testing.assert_close(finals[True][key], value, rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision, enabled", [("fp16", True), ("bf16", False), ("fp32", False)])
def test_grad_scaler_only_for_fp16(tmp_path, clips, precision, enabled):
    # torch scales gradients on the CPU too (torch.amp.GradScaler("cpu")), so fp16 enables it on any device.
    trainer = make_trainer(tmp_path, precision, precision=precision)
    assert trainer.scaler.is_enabled() == enabled
    if enabled:
        assert trainer.scaler.get_scale() == 2.0 ** 16
        logs = trainer.train_step(frames_of(trainer, clips), 0)
        assert logs is not None and logs["total_loss"] > 0
