"""Checks shared by the two hierarchical families (VQVAE2 and VQVAE2_OptVQ): configs,
and the adapter contract every configuration of theirs must keep."""
import torch
import torch.nn.functional as F

from models.adapter_base import VQOutput
from models.builders import create_model
from tests.helpers import train_steps
from core.config import Config
from models.builders import config_from_dict

TINY_ARGS = {"n_hid": 16, "res_channels": 8, "nb_res_layers": 1, "n_init": 8, "vocab_size": 32}


def make_config(model_type: str, scaling_rates, resolution: int = 32, **model_args) -> Config:
    """A tiny validated config of ``model_type``; ``model_args`` override the tiny defaults."""
    return config_from_dict({
        "model_type": model_type,
        "scaling_rates": scaling_rates,
        "data_args": {"resolution": resolution},
        "model_args": {**TINY_ARGS, "nb_levels": len(scaling_rates or []) or 1, **model_args},
    })


def build(config: Config, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(config=config)


def check_output_contract(adapter, frames: torch.Tensor, index_shapes: list) -> None:
    """Forward returns a VQOutput: scalars, a recon like the input, one index tensor per level."""
    out = adapter(frames)
    assert isinstance(out, VQOutput)
    assert out.vq_loss.ndim == 0 and torch.isfinite(out.vq_loss)
    assert out.perplexity.ndim == 0 and 1 <= out.perplexity <= max(adapter.vocab_sizes)
    assert out.recon.shape == frames.shape and out.recon.dtype == torch.float32
    assert [tuple(i.shape) for i in out.indices] == index_shapes
    assert all(i.dtype == torch.int64 for i in out.indices)
    assert all(0 <= int(i.min()) and int(i.max()) < v for i, v in zip(out.indices, adapter.vocab_sizes))
    assert adapter.latent_shapes(tuple(frames.shape)) == index_shapes
    assert len(adapter.vocab_sizes) == len(index_shapes)
    for side in frames.shape[-2:]:
        assert side % adapter.spatial_factor == 0


def check_gradients(adapter, frames: torch.Tensor) -> None:
    """Reconstruction + vq loss reaches every level's encoder, decoder, 1x1 conv and upsampler."""
    out = adapter(frames)
    (F.mse_loss(out.recon, frames) + out.vq_loss).backward()
    model = adapter.model
    touched = [
        *(encoder.layers[0].weight for encoder in model.encoders),
        *(decoder.layers[0].weight for decoder in model.decoders),
        *(conv.weight for conv in model.quant_convs),
        *(up.layers[0].weight for ups in model.upsamplers for up in ups if len(up.layers)),
        adapter.last_layer,
    ]
    for weight in touched:
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in adapter.trainable_parameters())


def recon_loss(adapter, frames: torch.Tensor) -> float:
    with torch.no_grad():
        return F.mse_loss(adapter(frames).recon, frames).item()


def check_overfits(adapter, frames: torch.Tensor, steps: int = 30, lr: float = 3e-3) -> tuple:
    """30 Adam steps on one real batch cut the reconstruction error by more than 60%."""
    adapter.eval()
    before = recon_loss(adapter, frames)
    adapter.train()
    train_steps(adapter, frames, steps, lr)
    adapter.eval()
    after = recon_loss(adapter, frames)
    assert after < 0.4 * before, (before, after)
    return before, after


def check_decode_inverts_encode(adapter, frames: torch.Tensor) -> None:
    adapter.train()
    adapter(frames)  # one training step's statistics, so the codebook is not at its initial values
    adapter.eval()
    with torch.no_grad():
        out = adapter(frames)
        indices = adapter.encode(frames)
        assert all(torch.equal(a, b) for a, b in zip(indices, out.indices))
        torch.testing.assert_close(adapter.decode(indices), out.recon, atol=1e-5, rtol=1e-5)


def check_encode_is_pure(adapter, frames: torch.Tensor) -> None:
    """``encode`` changes no parameter or buffer, in training mode as in eval mode."""
    for training in (True, False):
        adapter.train(training)
        before = {k: v.clone() for k, v in adapter.state_dict().items()}
        adapter.encode(frames)
        after = adapter.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)


def check_state_dict_round_trip(config: Config, frames: torch.Tensor, tmp_path) -> None:
    trained = build(config, seed=0)
    trained(frames)  # move the codebook statistics away from their initial values
    assert list(trained.state_dict()) == list(trained.model.state_dict())
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    fresh = build(config, seed=1)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    trained.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(frames).recon, trained(frames).recon, atol=0, rtol=0)
        assert all(torch.equal(a, b) for a, b in zip(fresh.encode(frames), trained.encode(frames)))


def check_quantizers_stay_fp32_under_autocast(adapter, frames: torch.Tensor) -> None:
    """Under bf16 autocast the quantizers get bf16 inputs yet compute and return fp32."""
    seen = []
    hooks = [
        quantizer.register_forward_hook(
            lambda _module, inputs, output: seen.append((inputs[0].dtype, output[0].dtype, output[1].dtype))
        )
        for quantizer in adapter.model.quantizers
    ]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = adapter(frames)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and all(s == (torch.bfloat16, torch.float32, torch.float32) for s in seen)
    assert torch.isfinite(out.vq_loss)
    assert all(buffer.dtype == torch.float32 for buffer in adapter.buffers() if buffer.is_floating_point())

