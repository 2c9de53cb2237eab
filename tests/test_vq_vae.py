"""VqVae2: shapes, gradients, codebook health, the inference path and config validation."""
import attrs
import pytest
import torch
import torch.nn.functional as F

from models.adapter_base import VQOutput
from models.vq_vae import VectorQuantizer, VectorQuantizerEMA
from models.vq_vae.adapter import VqVae2Adapter, VqVae2Args
from tests import helpers
from core.config import Config
from core.config_schema import ConfigError, Invalid, structure

SEQUENCE_LENGTH = 4
TINY = dict(group_count=2, n_hid=8, n_blk_per_group=1, vocab_size=32, n_init=16)
QUANTIZERS = {"ema": 0.99, "learned": 0.0}


def make_config(sequence_length=SEQUENCE_LENGTH, resolution=32, **model_args):
    args = VqVae2Args(**{**TINY, **model_args})
    config = structure(Config, {"data_args": {"sequence_length": sequence_length, "resolution": resolution}}, "")
    return attrs.evolve(config, model_args=args)


def make_adapter(seed=0, **model_args):
    torch.manual_seed(seed)
    config = make_config(**model_args)
    return VqVae2Adapter(config.model_args, config)


@pytest.fixture(scope="module")
def real_frames():
    """8 consecutive frames of the sample street clip, 32x32, in [-1, 1]: two clips of 4."""
    return helpers.real_frames(8, 32)


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
@pytest.mark.parametrize("group_count", [2, 3, 4, 5])
def test_shapes_for_every_depth_and_quantizer(group_count, decay):
    factor = 2 ** (group_count - 1)
    size = max(2 * factor, 16)
    adapter = make_adapter(group_count=group_count, n_hid=4, n_init=4 * group_count, decay=decay, resolution=size)
    x = torch.rand(2 * SEQUENCE_LENGTH, 3, size, size) * 2 - 1

    out = adapter(x)

    assert isinstance(out, VQOutput)
    assert out.recon.shape == x.shape
    assert out.indices.shape == (2, size // factor, size // factor)
    assert out.indices.dtype == torch.long
    assert out.vq_loss.ndim == 0 and out.perplexity.ndim == 0
    # all V codes used evenly (the codes start as these very vectors): exp(log V) may round above V
    assert 1 <= float(out.perplexity) <= adapter.vocab_sizes[0] + 1e-4
    assert adapter.spatial_factor == factor
    assert adapter.frames_per_clip == SEQUENCE_LENGTH
    assert adapter.vocab_sizes == [32]
    assert isinstance(adapter.model.quantizer, VectorQuantizerEMA if decay else VectorQuantizer)
    assert adapter.latent_shapes((SEQUENCE_LENGTH, 3, size, size)) == [(1, size // factor, size // factor)]


def test_frames_must_form_whole_clips():
    adapter = make_adapter()
    with pytest.raises(ValueError, match="sequence_length 4"):
        adapter(torch.zeros(6, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of 2"):
        adapter(torch.zeros(4, 3, 31, 32))


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_gradient_reaches_encoder_decoder_and_learned_codebook(decay, real_frames):
    adapter = make_adapter(decay=decay)
    out = adapter(real_frames)
    (F.mse_loss(out.recon, real_frames) + out.vq_loss).backward()

    model = adapter.model
    for name, weight in {
        "encoder input conv": model.encoder.spatial[0].weight,
        "encoder temporal conv": model.encoder.temporal[-1].weight,
        "decoder temporal conv": model.decoder.temporal.weight,
        "decoder output conv": adapter.last_layer,
    }.items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name
    if decay == 0:
        assert model.quantizer.codebook.grad.abs().sum() > 0


def test_ema_statistics_are_buffers_not_parameters():
    adapter = make_adapter(decay=0.99)
    quantizer = adapter.model.quantizer
    parameter_ids = {id(p) for p in adapter.parameters()}
    for name in ("codebook", "cluster_size", "embed_avg", "initialized"):
        assert id(getattr(quantizer, name)) not in parameter_ids
        assert f"quantizer.{name}" in adapter.state_dict()
    # initialised consistently: the first EMA update must not drag the codes to zero
    assert torch.equal(quantizer.embed_avg / quantizer.cluster_size[:, None], quantizer.codebook)


def test_ema_codebook_keeps_perplexity_above_floor(real_frames):
    adapter = make_adapter(decay=0.99)
    history = helpers.train_steps(adapter, real_frames, steps=50)
    perplexities = [float(out.perplexity) for out in history[1:]]
    assert min(perplexities) > 3.0, perplexities  # the original collapsed to 1 code in two steps


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_dead_code_restart_revives_a_far_away_codebook(decay, real_frames):
    """Codes far from every encoder output are never picked; only restarts bring them back."""

    def codes_used(threshold):
        adapter = make_adapter(decay=decay, dead_code_threshold=threshold)
        quantizer = adapter.model.quantizer
        with torch.no_grad():
            quantizer.codebook.add_(10.0)
            if decay:  # start from this codebook, not from the first batch's vectors
                quantizer.embed_avg.copy_(quantizer.codebook)
                quantizer.initialized.fill_(True)
        history = helpers.train_steps(adapter, real_frames, steps=10)
        return int(history[-1].indices.unique().numel())

    assert codes_used(threshold=0.0) == 1
    assert codes_used(threshold=1.0) >= 8


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_decode_of_encode_equals_forward_in_eval_mode(decay, real_frames):
    adapter = make_adapter(decay=decay)
    helpers.train_steps(adapter, real_frames, steps=3)
    adapter.eval()
    with torch.no_grad():
        out = adapter(real_frames)
    indices = adapter.encode(real_frames)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(adapter.decode(indices), out.recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_encode_never_changes_state(decay, train_mode, real_frames):
    adapter = make_adapter(decay=decay)
    helpers.train_steps(adapter, real_frames, steps=2)
    adapter.train(train_mode)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}

    adapter.encode(real_frames)

    assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())
    # while a training forward does update the codebook statistics
    adapter.train()
    adapter(real_frames)
    changed = {k for k, v in adapter.state_dict().items() if not torch.equal(before[k], v)}
    assert changed >= ({"quantizer.codebook", "quantizer.cluster_size", "quantizer.embed_avg"} if decay else {"quantizer.usage"})


def test_quantizer_runs_in_fp32_under_autocast(real_frames):
    adapter = make_adapter(decay=0.99)
    quantizer = adapter.model.quantizer
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        z = adapter.model.encoder(real_frames)
        quantized, vq_loss = quantizer(z)[:2]
        out = adapter(real_frames)
    assert z.dtype == torch.bfloat16
    assert quantized.dtype == vq_loss.dtype == torch.float32
    assert quantizer.codebook.dtype == quantizer.embed_avg.dtype == quantizer.cluster_size.dtype == torch.float32
    assert torch.isfinite(out.recon).all()


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_state_dict_round_trip(decay, real_frames, tmp_path):
    adapter = make_adapter(decay=decay)
    helpers.train_steps(adapter, real_frames, steps=3)
    assert list(adapter.state_dict()) == list(adapter.model.state_dict())
    path = tmp_path / "weights.pt"
    torch.save(adapter.state_dict(), path)

    restored = make_adapter(seed=1, decay=decay)
    restored.load_state_dict(torch.load(path, weights_only=True))

    adapter.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(adapter(real_frames).recon, restored(real_frames).recon)
    assert torch.equal(adapter.encode(real_frames), restored.encode(real_frames))


@pytest.mark.parametrize("decay", QUANTIZERS.values(), ids=QUANTIZERS.keys())
def test_overfits_one_real_batch(decay, real_frames):
    adapter = make_adapter(decay=decay)
    history = helpers.train_steps(adapter, real_frames, steps=30, lr=1e-2)
    first = F.mse_loss(history[0].recon, real_frames).item()
    last = F.mse_loss(history[-1].recon, real_frames).item()
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"n_init": 100, "n_hid": 24}, "model_args.n_init = 100: expected a multiple of group_count * n_hid (48)"),
        ({"group_count": 6}, "model_args.group_count = 6: expected an integer in [2, 5]"),
        ({"decay": 1.0}, "model_args.decay = 1.0: expected a value in [0, 1)"),
        ({"n_hid": 0}, "model_args.n_hid = 0: expected a value > 0"),
        ({"vocab_size": 1}, "model_args.vocab_size = 1: expected an integer >= 2"),
        ({"dead_code_threshold": -1}, "model_args.dead_code_threshold = -1.0: expected a value >= 0"),
        ({"n_blk_per_group": "2"}, "model_args.n_blk_per_group = '2': expected an integer"),
        ({"n_inits": 64}, "model_args.n_inits: unknown key (did you mean 'n_init'?)"),
    ],
)
def test_invalid_model_args_name_the_key(model_args, message):
    with pytest.raises(ConfigError) as caught:
        structure(VqVae2Args, {"group_count": 2, **model_args}, "model_args")
    assert message in str(caught.value)


def test_resolution_must_fit_the_downsampling():
    config = make_config(group_count=3, n_init=24, resolution=[30, 64])
    with pytest.raises(Invalid, match=r"data_args.resolution = \[30, 64\]: expected height and width multiples of 4"):
        VqVae2Adapter.check_config(config)
    VqVae2Adapter.check_config(make_config(group_count=3, n_init=24, resolution=[32, 64]))


def test_sequence_length_comes_from_data_args():
    config = make_config(sequence_length=2)
    adapter = VqVae2Adapter(config.model_args, config)
    assert adapter.frames_per_clip == 2
    assert adapter(torch.zeros(6, 3, 32, 32)).indices.shape == (3, 16, 16)
