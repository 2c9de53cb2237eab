"""models.quantizers: one contract for every quantizer and family, validated specs, the dead-code rule."""
import collections
import contextlib

import pytest
import torch
import torch.nn.functional as F

from core.config_schema import ConfigError
from models.builders import config_from_dict, create_model
from models.footprint import model_bytes
from models.quantizers import (FSQ, LFQ, NAMES, FamilySettings, QuantizerSpec, ResidualVQ, VectorQuantizer,
                               VectorQuantizerEMA, build_quantizer, fsq_levels, lfq_bits)
from models.quantizers.usage import MAX_DEAD_FRACTION
from tests.helpers import real_frames, train_steps

TAMING_ARGS = {"vocab_size": 16, "n_init": 8, "ddconfig": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
                                                           "attn_resolutions": [], "resolution": 32, "z_channels": 8}}
FAMILIES = {
    "VqVae2": ({"group_count": 2, "n_hid": 8, "n_blk_per_group": 1, "vocab_size": 16, "n_init": 16}, None),
    "VQVAE2": ({"n_hid": 16, "res_channels": 8, "nb_res_layers": 1, "n_init": 8, "vocab_size": 16, "nb_levels": 2},
               [2, 2]),
    "VQVAE2_OptVQ": ({"n_hid": 16, "res_channels": 8, "nb_res_layers": 1, "n_init": 8, "vocab_size": 16,
                      "nb_levels": 2}, [2, 2]),
    "TamingVQGAN": (TAMING_ARGS, None),
    "EMAVQ": (TAMING_ARGS, None),
    "CausalVideoVQ": ({"ch": 4, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
                       "vocab_size": 16}, None),
}


def config(model_type, quantizer=None, **model_args):
    args, rates = FAMILIES[model_type]
    data = {"model_type": model_type, "scaling_rates": rates, "data_args": {"resolution": 32, "sequence_length": 2},
            "model_args": {**args, **model_args, **({"quantizer": quantizer} if quantizer is not None else {})}}
    return config_from_dict(data)


@pytest.fixture(scope="module")
def frames():
    return real_frames(4, 32)


def every_quantizer(dim=8, vocab_size=16, **settings):
    family = FamilySettings(dead_code_threshold=settings.pop("dead_code_threshold", 1.0))
    return {name: build_quantizer(QuantizerSpec(name), dim, vocab_size, family) for name in NAMES}


# -- every name with every family ------------------------------------------------------------
@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("name", NAMES)
def test_every_quantizer_trains_with_every_family(model_type, name, frames):
    torch.manual_seed(0)
    adapter = create_model(config(model_type, name))
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    history = train_steps(adapter, frames, steps=3)
    assert all(torch.isfinite(out.vq_loss) and torch.isfinite(out.recon).all() for out in history)
    assert any(not torch.equal(before[k], v) for k, v in adapter.state_dict().items())
    adapter.eval()
    indices = adapter.encode(frames)
    levels = indices if isinstance(indices, list) else [indices]
    assert all(int(i.min()) >= 0 and int(i.max()) < v for i, v in zip(levels, adapter.vocab_sizes))
    assert adapter.decode(indices).shape == frames.shape
    assert len(adapter.code_factors) == len(adapter.vocab_sizes)


def test_families_keep_their_default_quantizer_and_keys():
    assert type(create_model(config("VqVae2")).model.quantizer) is VectorQuantizerEMA
    assert type(create_model(config("VqVae2", decay=0.0)).model.quantizer) is VectorQuantizer
    assert "quantize.embedding.weight" in create_model(config("TamingVQGAN")).state_dict()
    assert "quantizers.1.embedding.weight" in create_model(config("VQVAE2_OptVQ")).state_dict()
    assert type(create_model(config("CausalVideoVQ")).model.quantize) is FSQ


def test_multi_level_families_take_a_spec_per_level():
    adapter = create_model(config("VQVAE2", ["fsq", {"type": "lfq"}]))
    assert [type(q) for q in adapter.quantizers] == [FSQ, LFQ]
    assert adapter.vocab_sizes == [16, 16] and adapter.code_factors == [[4, 4], [2, 2, 2, 2]]
    with pytest.raises(ConfigError, match=r"model_args.quantizer: 3 quantizers for model_args.nb_levels = 2"):
        config("VQVAE2", ["fsq", "fsq", "fsq"])


# -- specs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("fs", r"model_args.quantizer.type = 'fs': expected one of 'vq'"),
    ({"type": "fsq", "levels": [1, 8]}, r"model_args.quantizer.levels = \[1, 8\]: expected a list of 1 to 16"),
    ({"type": "fsq", "levels": [2, 2, 2]}, r"model_args.quantizer.levels = \[2, 2, 2\]: .*use lfq"),
    ({"type": "fsq", "rotation_trick": True}, r"model_args.quantizer.rotation_trick = True: not an option of 'fsq'"),
    ({"type": "vq", "levles": [8]}, r"model_args.quantizer.levles: unknown key"),
    ({"levels": [8]}, r"model_args.quantizer.type: required key is missing"),
    ({"type": "lfq", "entropy_loss_weight": -1}, r"model_args.quantizer.entropy_loss_weight = -1.0: expected a value >= 0"),
    (3, r"model_args.quantizer = 3: expected"),
])
def test_a_bad_spec_is_one_line_naming_its_key(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config("VqVae2", value)
    assert "\n" not in str(caught.value)


def test_a_name_alone_resolves_options_from_the_family():
    assert fsq_levels(4096) == [8, 8, 8, 8] and fsq_levels(512) == [8, 8, 8] and fsq_levels(1024) == [8, 8, 4, 4]
    assert lfq_bits(4096) == 12 and lfq_bits(512) == 9
    adapter = create_model(config("VqVae2", "fsq", vocab_size=4096))
    assert adapter.vocab_sizes == [4096] and adapter.code_factors == [[8, 8, 8, 8]]
    adapter = create_model(config("VqVae2", "lfq", vocab_size=512))
    assert adapter.vocab_sizes == [512] and adapter.code_factors == [[2] * 9]
    assert "fsq(levels=[8, 8, 8, 8]" in create_model(config("VqVae2", "fsq", vocab_size=4096)).model.quantizer.describe()


def constant_bits(indices: torch.Tensor, bits: int) -> int:
    """How many of the ``bits`` binary digits of ``indices`` never change."""
    share = ((indices.reshape(-1, 1) >> torch.arange(bits)) & 1).float().mean(0)
    return int(((share == 0) | (share == 1)).sum())


def test_lfq_keeps_every_bit_in_use():
    """LFQ on raw encoder outputs loses bits for good; on the unit sphere (the default) every bit still flips."""
    frames = real_frames(8, 32)

    def dead_bits(spec):
        torch.manual_seed(0)
        adapter = create_model(config("VqVae2", spec, vocab_size=64))
        train_steps(adapter, frames, steps=80, lr=2e-3)
        adapter.eval()
        return constant_bits(adapter.encode(frames), bits=6)

    assert "spherical=True" in create_model(config("VqVae2", "lfq")).model.quantizer.describe()
    assert dead_bits("lfq") == 0
    assert dead_bits({"type": "lfq", "spherical": False}) > 0  # MAGVIT-v2's form, the cause


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("name", NAMES)
def test_the_memory_estimate_builds_every_quantizer_on_the_meta_device(model_type, name):
    """Issue: FSQ read its level count with ``.item()`` while built on ``meta`` (``models.footprint``),
    so no FSQ config could start training."""
    needed, _, _ = model_bytes(config(model_type, name))
    assert needed > 0


def test_code_factors_are_the_digits_of_an_index():
    """``index = sum(digit_i * prod(code_factors[:i]))``: stepping digit i moves one channel of the code."""
    quantizer = FSQ(dim=3, levels=[8, 5, 3])
    codes = quantizer.inner._indices_to_codes(torch.arange(quantizer.vocab_size))
    step = 1
    for channel, factor in enumerate(quantizer.code_factors):
        moved = (codes[step] != codes[0]).nonzero().flatten().tolist()
        assert moved == [channel]
        step *= factor
    assert step == quantizer.vocab_size


# -- the contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(4, 4), (3, 4, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", NAMES)
def test_any_spatial_rank_and_decode_of_encode(name, spatial):
    torch.manual_seed(0)
    quantizer = every_quantizer()[name].train()
    z = torch.randn(2, 8, *spatial)
    result = quantizer(z)
    depth = () if result.indices.shape == (2, *spatial) else (result.indices.shape[1],)
    assert result.quantized.shape == z.shape and result.indices.shape == (2, *depth, *spatial)
    assert result.loss.ndim == 0 and all(v.ndim == 0 for v in result.stats.values())
    quantizer.eval()
    with torch.no_grad():
        result = quantizer(z)
    indices = quantizer.encode(z)
    assert torch.equal(indices, result.indices)
    torch.testing.assert_close(quantizer.decode(indices), result.quantized, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_encode_never_changes_state_and_runs_in_fp32(name):
    torch.manual_seed(0)
    quantizer = every_quantizer()[name].train()
    z = torch.randn(2, 8, 4, 4)
    quantizer(z)  # initialised
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.encode(z)
    with torch.no_grad():
        quantizer(z)  # training mode without autograd: an inference pass too
    assert all(torch.equal(before[k], v) for k, v in quantizer.state_dict().items())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = quantizer(z.bfloat16())
        indices = quantizer.encode(z.bfloat16())
    assert result.quantized.dtype == torch.float32 and result.loss.dtype == torch.float32
    assert not indices.is_floating_point()


def test_residual_vq_decodes_fewer_levels_at_a_lower_rate():
    torch.manual_seed(0)
    quantizer = ResidualVQ(dim=8, vocab_size=16, num_quantizers=3, quantize_dropout=True).eval()
    z = torch.randn(2, 8, 4, 4)
    indices = quantizer.encode(z)
    assert indices.shape == (2, 3, 4, 4)
    errors = [F.mse_loss(quantizer.decode(indices[:, :n]), z) for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    quantizer.train()
    dropped = [(quantizer(z).indices == -1).any() for _ in range(20)]
    assert any(dropped) and not all(dropped)  # quantize dropout trains the lower rates


# -- host reads -----------------------------------------------------------------------------------
@contextlib.contextmanager
def counting_host_reads():
    counts = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "__int__", "__float__", "tolist")}

    def counted(name):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return originals[name](self, *args, **kwargs)
        return read

    for name in originals:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("name", NAMES)
def test_training_forwards_never_read_the_device(name):
    torch.manual_seed(0)
    quantizer = every_quantizer(dead_code_threshold=1.0)[name].train()
    z = torch.randn(4, 8, 4, 4, requires_grad=True)
    quantizer(z)  # the first step may read once whether the codebook is initialised
    with counting_host_reads() as counts:
        for _ in range(5):
            result = quantizer(z)
            (result.quantized.sum() + result.loss).backward()
    assert sum(counts.values()) == 0, dict(counts)


# -- the dead-code rule -------------------------------------------------------------------------
def test_restarts_never_exceed_the_distinct_vectors_and_get_a_grace_period():
    torch.manual_seed(0)
    quantizer = VectorQuantizerEMA(vocab_size=32, dim=4, dead_code_threshold=1.0).train()
    quantizer.initialized.fill_(True)
    quantizer.codebook.copy_(torch.randn(32, 4) + 50)  # far from every vector: all but one code go unused
    quantizer.embed_avg.copy_(quantizer.codebook)
    distinct = torch.randn(3, 4)
    z = distinct[torch.randint(0, 3, (2, 4, 4))].permute(0, 3, 1, 2)  # 32 vectors, 3 distinct
    restarted = quantizer(z).stats["restarts"]
    assert restarted == 3
    jumped = [code for code in quantizer.codebook if (code[None] == distinct).all(1).any()]
    assert len(jumped) == 3 and len({tuple(code.tolist()) for code in jumped}) == 3
    later = [float(quantizer(z).stats["restarts"]) for _ in range(20)]
    # the other dead codes restart as vectors allow, never the ones just restarted
    assert max(later) <= 3 and (quantizer.usage > MAX_DEAD_FRACTION).sum() >= 3


def test_a_used_codebook_never_churns(frames):
    """Issue: with N vectors for N codes the old absolute threshold restarted 13-20% of the codes every step."""
    torch.manual_seed(0)
    adapter = create_model(config("VqVae2", vocab_size=64, dead_code_threshold=1.0))
    train_steps(adapter, frames, steps=30)
    quantizer = adapter.model.quantizer
    restarts = [float(quantizer(adapter.model.encoder(frames)).stats["restarts"]) for _ in range(10)]
    assert sum(restarts) / len(restarts) <= 0.01 * 64


def test_usage_is_saved_and_older_files_without_it_load():
    quantizer = VectorQuantizerEMA(vocab_size=8, dim=4, dead_code_threshold=1.0)
    assert "usage" in quantizer.state_dict()
    without = {k: v for k, v in quantizer.state_dict().items() if k != "usage"}
    VectorQuantizerEMA(vocab_size=8, dim=4, dead_code_threshold=1.0).load_state_dict(without)
    # restarts off: no statistic to save, and a file that has one still loads
    quiet = VectorQuantizerEMA(vocab_size=8, dim=4, dead_code_threshold=0.0)
    assert "usage" not in quiet.state_dict()
    quiet.load_state_dict(quantizer.state_dict())
    with pytest.raises(RuntimeError, match="codebook"):
        quiet.load_state_dict({k: v for k, v in quantizer.state_dict().items() if k != "codebook"})
