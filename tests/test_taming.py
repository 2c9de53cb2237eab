"""Taming VQGAN: upstream-compatible VQModel / EMAVQ, the loss under upstream's keys, upstream checkpoints."""
import json
import logging
import os

import attrs
import pytest
import torch
import torch.nn.functional as F

from core.config import Config
from core.config_schema import ConfigError, Invalid, structure
from core.pretrained import WeightsMissingError
from models.adapter_base import VQOutput
from models.perceptual import LPIPS
from models.taming.adapter import TRANSLATION, TamingArgs, TamingDDConfig, TamingVQGANAdapter
from models.taming.checkpoint_loading import load_upstream_weights
from models.taming.quantize import EMAVectorQuantizer, VectorQuantizer
from models.taming.vqgan import EMAVQ, VQModel
from tests.helpers import real_frames
from train.losses import LossCalculator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The key-list configuration: level 0 at 32 px with 32 channels, level 1 at 16 px (attention) with 64.
KEYS_DDCONFIG = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                 "resolution": 32, "z_channels": 8}
TINY_DDCONFIG = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                 "resolution": 32, "z_channels": 8}
TINY_LOSS = {"disc_start": 10, "disc_num_layers": 2, "disc_ndf": 8}


# -- upstream's naming, written out -------------------------------------------------------
def conv(prefix):
    return [f"{prefix}.weight", f"{prefix}.bias"]


norm = conv  # GroupNorm: weight and bias too


def resnet(prefix, shortcut=False):
    keys = norm(f"{prefix}.norm1") + conv(f"{prefix}.conv1") + norm(f"{prefix}.norm2") + conv(f"{prefix}.conv2")
    return keys + (conv(f"{prefix}.nin_shortcut") if shortcut else [])


def attn(prefix):
    return norm(f"{prefix}.norm") + sum((conv(f"{prefix}.{name}") for name in ("q", "k", "v", "proj_out")), [])


def mid(prefix):
    return resnet(f"{prefix}.block_1") + attn(f"{prefix}.attn_1") + resnet(f"{prefix}.block_2")


UPSTREAM_KEYS = (
    conv("encoder.conv_in")
    + resnet("encoder.down.0.block.0")
    + conv("encoder.down.0.downsample.conv")
    + resnet("encoder.down.1.block.0", shortcut=True)  # 32 -> 64 channels
    + attn("encoder.down.1.attn.0")
    + mid("encoder.mid")
    + norm("encoder.norm_out") + conv("encoder.conv_out")
    + conv("decoder.conv_in")
    + mid("decoder.mid")
    + resnet("decoder.up.0.block.0", shortcut=True) + resnet("decoder.up.0.block.1")  # 64 -> 32; num_res_blocks + 1
    + resnet("decoder.up.1.block.0") + resnet("decoder.up.1.block.1")
    + attn("decoder.up.1.attn.0") + attn("decoder.up.1.attn.1")
    + conv("decoder.up.1.upsample.conv")
    + norm("decoder.norm_out") + conv("decoder.conv_out")
    + ["quantize.embedding.weight"] + conv("quant_conv") + conv("post_quant_conv")
)


# -- builders --------------------------------------------------------------------------------
def taming_args(ddconfig=None, lossconfig=None, **model_args) -> TamingArgs:
    raw = {"vocab_size": 32, "n_init": 8, "ddconfig": ddconfig or TINY_DDCONFIG,
           "lossconfig": lossconfig or TINY_LOSS, **model_args}
    return structure(TamingArgs, raw, "model_args")


def make_config(model_type="TamingVQGAN", resolution=32, **model_args) -> Config:
    config = structure(Config, {"model_type": model_type, "data_args": {"resolution": resolution}}, "")
    return attrs.evolve(config, model_args=taming_args(**model_args))


def adapter(model_type="TamingVQGAN", seed=0, **model_args) -> TamingVQGANAdapter:
    torch.manual_seed(seed)
    config = make_config(model_type, **model_args)
    TamingVQGANAdapter.check_config(config)
    return TamingVQGANAdapter(config.model_args, config)


@pytest.fixture(scope="module")
def frames():
    """Eight real frames of bikes.mp4 at 32 x 32, in [-1, 1]."""
    return real_frames(8, 32)


def taming_loss(use_gan: bool = True) -> LossCalculator:
    """The loss as a Taming run builds it: lossconfig's defaults, LPIPS (random backbone), PatchGAN."""
    config = make_config()
    defaults = TamingVQGANAdapter.train_defaults(config.model_args, {})
    args = structure(type(config.train_args), {**defaults, "use_gan": use_gan, "perceptual_backbone": "random"},
                     "train_args")
    return LossCalculator(args, 3, (32, 32), LPIPS("random"))


@pytest.fixture(scope="module")
def loss_module():
    return taming_loss()


# -- keys --------------------------------------------------------------------------------------
def test_vqmodel_keys_are_upstreams():
    state = adapter(ddconfig=KEYS_DDCONFIG, vocab_size=64).state_dict()
    assert list(state) == UPSTREAM_KEYS
    assert state["encoder.conv_out.weight"].shape == (8, 64, 3, 3)  # double_z false: z_channels
    assert state["decoder.up.0.block.0.nin_shortcut.weight"].shape == (32, 64, 1, 1)
    assert state["quantize.embedding.weight"].shape == (64, 8)


def test_emavq_keys_are_upstreams_and_its_codebook_is_no_parameter():
    model = adapter("EMAVQ", ddconfig=KEYS_DDCONFIG)
    assert isinstance(model.model, EMAVQ)
    ema_keys = ["quantize.embedding.weight", "quantize.embedding.cluster_size", "quantize.embedding.embed_avg"]
    expected = [k for k in UPSTREAM_KEYS if not k.startswith("quantize.")]
    expected = expected[: expected.index("quant_conv.weight")] + ema_keys + expected[expected.index("quant_conv.weight"):]
    assert list(model.state_dict()) == expected
    trained = {id(p) for p in model.trainable_parameters()}
    assert trained == {id(p) for p in model.parameters()}
    assert all(id(t) not in trained for t in model.model.quantize.embedding.buffers())


def test_model_type_and_variant_select_the_model():
    assert isinstance(adapter("TamingVQGAN").model.quantize, VectorQuantizer)
    assert isinstance(adapter("VQGAN", variant="EMAVQ").model.quantize, EMAVectorQuantizer)
    config = make_config("EMAVQ", variant="VQModel")
    with pytest.raises(Invalid, match=r"model_args.variant = 'VQModel'"):
        TamingVQGANAdapter.check_config(config)


def test_translation_table():
    assert TRANSLATION == {"vocab_size": "n_embed", "n_init": "embed_dim"}
    model = adapter(vocab_size=37, n_init=5).model
    assert (model.n_embed, model.embed_dim) == (37, 5)
    assert model.quantize.embedding.weight.shape == (37, 5)
    assert model.quant_conv.out_channels == 5


# -- the forward contract ------------------------------------------------------------------------
@pytest.mark.parametrize("model_type, ddconfig, resolution, latent", [
    ("TamingVQGAN", KEYS_DDCONFIG, 32, (16, 16)),
    ("EMAVQ", {**TINY_DDCONFIG, "ch_mult": [1, 1, 2], "attn_resolutions": [8]}, (32, 16), (8, 4)),
])
def test_output_shapes(frames, model_type, ddconfig, resolution, latent):
    model = adapter(model_type, ddconfig=ddconfig)
    x = F.interpolate(frames[:4], size=resolution)
    out = model(x)
    assert isinstance(out, VQOutput)
    assert out.recon.shape == x.shape and out.vq_loss.ndim == 0 and torch.isfinite(out.vq_loss)
    assert out.indices.shape == (4, *latent) and out.indices.dtype == torch.int64
    assert 1 <= float(out.perplexity) <= model.vocab_sizes[0]
    assert model.spatial_factor == 2 ** (len(ddconfig["ch_mult"]) - 1)
    assert model.latent_shapes((4, 3, *x.shape[2:])) == [(4, *latent)]
    assert model.last_layer is model.model.decoder.conv_out.weight


def test_gradients_reach_encoder_decoder_and_codebook(frames):
    model = adapter()
    out = model(frames)
    (F.mse_loss(out.recon, frames) + out.vq_loss).backward()
    for name in ("encoder.conv_in.weight", "decoder.conv_out.weight", "quantize.embedding.weight",
                 "quant_conv.weight", "post_quant_conv.weight"):
        grad = model.model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("legacy, commitment_scale, codebook_scale", [(True, 1.0, 0.25), (False, 0.25, 1.0)])
def test_legacy_selects_which_term_beta_weighs(legacy, commitment_scale, codebook_scale):
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, beta=0.25, legacy=legacy)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    _, loss, indices, _ = quantizer(z)
    loss.backward()
    z_q = quantizer.get_codebook_entry(indices, shape=(2, 3, 3, 4))
    assert torch.allclose(z.grad, commitment_scale * 2 * (z - z_q).detach() / z.numel())
    assert quantizer.embedding.weight.grad.sum().item() == pytest.approx(
        codebook_scale * 2 * (z_q - z).sum().item() / z.numel(), rel=1e-4)


@pytest.mark.parametrize("model_type", ["TamingVQGAN", "EMAVQ"])
def test_decode_of_encode_equals_forward_in_eval(frames, model_type):
    model = adapter(model_type).eval()
    with torch.no_grad():
        assert torch.equal(model.decode(model.encode(frames)), model(frames).recon)


@pytest.mark.parametrize("model_type", ["TamingVQGAN", "EMAVQ"])
def test_encode_changes_no_state(frames, model_type):
    model = adapter(model_type, dead_code_threshold=1.0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(frames)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model(frames)  # training forward: the EMA update or the dead-code restart does change the codebook
    assert not torch.equal(before["quantize.embedding.weight"], model.state_dict()["quantize.embedding.weight"])


@pytest.mark.parametrize("model_type", ["TamingVQGAN", "EMAVQ"])
def test_dead_codes_restart_from_encoder_outputs(frames, model_type):
    model = adapter(model_type, vocab_size=64, dead_code_threshold=1.0).train()
    with torch.no_grad():
        latents = model.model.quant_conv(model.model.encoder(frames))
        used = set(model.model.quantize.indices(latents).unique().tolist())
    model(frames)  # a training step (autograd on) restarts; under no_grad nothing changes
    dead = [i for i in range(64) if i not in used]
    assert dead, "the test needs unused codes"
    codebook = model.model.quantize.embedding.weight[dead]
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    distances = torch.cdist(codebook, flat, compute_mode="donot_use_mm_for_euclid_dist")
    assert distances.min(dim=1).values.max() < 1e-6  # every dead code is now an encoder output


def test_emavq_trains_on_real_frames(frames):
    model = adapter("EMAVQ", vocab_size=64, dead_code_threshold=0.5).train()
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=2e-3, betas=(0.5, 0.9))
    codebook_before = model.model.quantize.embedding.weight.clone()
    losses = []
    for _ in range(30):
        out = model(frames)
        recon = F.mse_loss(out.recon, frames)
        optimizer.zero_grad()
        (recon + out.vq_loss).backward()
        optimizer.step()
        losses.append(recon.item())
    assert losses[-1] < 0.2 * losses[0], losses
    assert not torch.equal(codebook_before, model.model.quantize.embedding.weight)


def test_state_dict_round_trip(frames, tmp_path):
    trained = adapter("EMAVQ", dead_code_threshold=1.0).train()
    trained(frames)  # move the EMA buffers away from their initial values
    torch.save(trained.state_dict(), tmp_path / "weights.pth")
    restored = adapter("EMAVQ", seed=1)
    restored.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True))
    trained.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(trained(frames).recon, restored(frames).recon)


# -- config checks ------------------------------------------------------------------------------
def test_num_groups_default_and_validation():
    assert TamingDDConfig().groups == 32
    assert TamingDDConfig(ch=24, ch_mult=[1, 2]).groups == 24
    with pytest.raises(ConfigError, match=r"model_args.ddconfig.num_groups = 32: expected a divisor"):
        taming_args(ddconfig={**TINY_DDCONFIG, "num_groups": 32})
    with pytest.raises(ConfigError, match=r"model_args.lossconfig.disc_conditional"):
        taming_args(lossconfig={"disc_conditional": True})


def test_frame_size_must_be_a_multiple_of_the_downsampling():
    config = make_config(resolution=36, ddconfig={**TINY_DDCONFIG, "ch_mult": [1, 1, 1, 2]})
    with pytest.raises(Invalid, match=r"data_args.resolution = 36: expected height and width multiples of 8"):
        TamingVQGANAdapter.check_config(config)


@pytest.mark.parametrize("name, model_class", [("taming_vqgan.json", VQModel), ("taming_emavq.json", EMAVQ)])
def test_shipped_configs_validate(name, model_class):
    with open(os.path.join(REPO, "configs", name), encoding="utf-8") as fh:
        raw = {k: v for k, v in json.load(fh).items() if not k.startswith("_")}
    config = structure(Config, raw, "")
    config = attrs.evolve(config, model_args=structure(TamingArgs, raw["model_args"], "model_args"))
    TamingVQGANAdapter.check_config(config)
    with torch.device("meta"):  # shapes only
        assert type(TamingVQGANAdapter(config.model_args, config).model) is model_class


# -- the loss under upstream's keys ---------------------------------------------------------------
def test_loss_module_keys_are_upstreams(loss_module):
    keys = list(loss_module.state_dict())
    for key in ("perceptual_loss.scaling_layer.shift", "perceptual_loss.net.slice1.0.weight",
                "perceptual_loss.net.slice5.28.bias", "perceptual_loss.lin0.model.1.weight",
                "perceptual_loss.lin4.model.1.weight", "discriminator.main.0.weight",
                "discriminator.main.3.running_mean"):
        assert key in keys, key
    assert {k.split(".")[0] for k in keys} == {"perceptual_loss", "discriminator"}
    assert not any(p.requires_grad for p in loss_module.perceptual_loss.parameters())
    loss_module.train()
    assert not loss_module.perceptual_loss.training  # LPIPS stays in eval mode (no dropout)


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(frames, loss_module):
    lpips = loss_module.perceptual_loss
    noise = torch.randn_like(frames[:2], generator=torch.Generator().manual_seed(0))
    same, small, large = (lpips(frames[:2], frames[:2] + s * noise).mean().item() for s in (0.0, 0.1, 0.5))
    assert same == 0.0 and 0 < small < large


def test_lpips_loads_vgg16_weights_from_a_file(tmp_path):
    reference = LPIPS("random")
    convs = {i: layer for part in reference.net.children() for i, layer in
             ((int(n), m) for n, m in part.named_children()) if isinstance(layer, torch.nn.Conv2d)}
    weights = {f"features.{i}.{name}": torch.full_like(p, 0.01 * i) for i, layer in convs.items()
               for name, p in layer.named_parameters()}
    torch.save(weights, tmp_path / "vgg16.pth")
    lpips = LPIPS("vgg", vgg_weights=str(tmp_path / "vgg16.pth"))
    assert torch.equal(lpips.net.slice5.get_submodule("28").weight, weights["features.28.weight"])
    with pytest.raises(WeightsMissingError, match="train_args.vgg_weights"):
        LPIPS("vgg", vgg_weights=str(tmp_path / "absent.pth"))


# -- upstream checkpoints -------------------------------------------------------------------------
class ModelCheckpoint:
    """Stands in for Lightning's callback class: old checkpoints pickle it (as a dict key)."""

    def __init__(self, monitor="val/rec_loss"):
        self.monitor = monitor


def lightning_checkpoint(model, loss, callbacks_keyed_by_class: bool) -> dict:
    """A Lightning-style .ckpt: shifted weights under state_dict, loss.* keys, and metadata."""
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state.update({f"loss.{k}": v + 1 if v.is_floating_point() else v for k, v in loss.state_dict().items()})
    callback_key = ModelCheckpoint if callbacks_keyed_by_class else "ModelCheckpoint{'monitor': 'val/rec_loss'}"
    return {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.0.8",
        "callbacks": {callback_key: {"best_model_score": torch.tensor(0.25), "best_model_path": "last.ckpt"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9), "params": [0]}]}],
        "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"n_embed": 32, "embed_dim": 8},
        "state_dict": state,
    }


@pytest.mark.parametrize("callbacks_keyed_by_class", [False, True])
def test_loads_a_lightning_checkpoint(tmp_path, caplog, callbacks_keyed_by_class):
    model, loss = adapter(), taming_loss()
    ckpt = lightning_checkpoint(model, loss, callbacks_keyed_by_class)
    torch.save(ckpt, tmp_path / "last.ckpt")
    target, target_loss = adapter(seed=1), taming_loss()
    with caplog.at_level(logging.INFO):
        loaded = load_upstream_weights(target, str(tmp_path / "last.ckpt"), loss_module=target_loss)
    state = ckpt["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())
    assert all(torch.equal(v, state[f"loss.{k}"]) for k, v in target_loss.state_dict().items())
    assert (loaded.model_keys, loaded.loss_keys) == (len(model.state_dict()), len(loss.state_dict()))
    assert f"{loaded.model_keys} keys loaded into the model, {loaded.loss_keys} into the loss module" in caplog.text
    assert ("inert placeholders" in caplog.text) == callbacks_keyed_by_class


def test_loss_keys_of_parts_this_training_does_not_use_are_skipped(tmp_path, caplog):
    model, loss = adapter(), taming_loss()
    torch.save(lightning_checkpoint(model, loss, False), tmp_path / "last.ckpt")
    without_gan = taming_loss(use_gan=False)
    with caplog.at_level(logging.INFO):
        loaded = load_upstream_weights(adapter(seed=1), str(tmp_path / "last.ckpt"), loss_module=without_gan)
    assert loaded.loss_keys == len(without_gan.state_dict()) < len(loss.state_dict())
    assert "loss.* keys not loaded (parts of the loss this training does not use)" in caplog.text


def test_plain_state_dict_without_a_loss_module_keeps_the_loss_keys(tmp_path):
    model = adapter()
    state = {**model.state_dict(), "loss.discriminator.main.0.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "weights.pth")
    loaded = load_upstream_weights(adapter(seed=1), str(tmp_path / "weights.pth"))
    assert loaded.loss_keys == 0 and list(loaded.loss_state) == ["discriminator.main.0.weight"]


def test_mismatch_names_missing_unexpected_and_reshaped_keys(tmp_path):
    state = dict(adapter().state_dict())
    del state["quant_conv.bias"]
    state["quantize.used"] = torch.arange(4)
    state["post_quant_conv.weight"] = torch.zeros(8, 4, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError) as err:
        load_upstream_weights(adapter(), str(tmp_path / "bad.ckpt"))
    message = str(err.value)
    assert "missing 1 (quant_conv.bias)" in message and "unexpected 1 (quantize.used)" in message
    assert "post_quant_conv.weight (8, 4, 1, 1) != (8, 8, 1, 1)" in message


def test_full_unpickling_needs_allow_unsafe(tmp_path):
    model = adapter()
    path = tmp_path / "legacy.ckpt"  # the legacy format cannot be inspected for foreign classes
    torch.save({"state_dict": model.state_dict(), "callbacks": {ModelCheckpoint: {}}}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match="allow_unsafe_load"):
        load_upstream_weights(adapter(seed=1), str(path))
    target = adapter(seed=1)
    load_upstream_weights(target, str(path), allow_unsafe=True)
    assert torch.equal(target.state_dict()["quant_conv.weight"], model.state_dict()["quant_conv.weight"])
