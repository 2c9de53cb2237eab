"""The loss: schedules, adaptive weight, GAN losses, LPIPS weights, every family, Taming's defaults."""
import importlib
import math

import attrs
import pytest
import torch
from torch import nn

from core.config import Config
from core.config_schema import ConfigError, structure
from core.pretrained import VGG16_FILE, WeightsMissingError
from models.builders import resolve_adapter
from models.discriminator import NLayerDiscriminator
from models.perceptual import build_lpips
from tests.helpers import real_frames
from train.adversarial import adaptive_weight, adopt_weight, generator_loss, hinge_d_loss, vanilla_d_loss
from train.losses import LossCalculator, uses_perceptual
from train.optim import build_optimizers

FRAME = 32


def make_config(train_args=None, model_args=None, model_type="VqVae2", scaling_rates=None, sequence_length=2):
    """A validated Config without going through the model registry (model_args: an attrs object or {})."""
    raw = {
        "model_type": model_type,
        "scaling_rates": scaling_rates,
        "data_args": {"resolution": FRAME, "sequence_length": sequence_length},
        "train_args": {"num_steps": 20, **(train_args or {})},
    }
    config = structure(Config, raw, "")
    model_args = model_args if model_args is not None else {}
    if attrs.has(type(model_args)):  # the family's defaults of train_args, under the given ones
        family = resolve_adapter(model_type)
        raw["train_args"] = {**family.train_defaults(model_args, raw["train_args"]), **raw["train_args"]}
        config = structure(Config, raw, "")
    return attrs.evolve(config, model_args=model_args)


def build_losses(model, config) -> LossCalculator:
    """The loss as the trainer builds it (the LPIPS network only when the loss uses it)."""
    args = config.train_args
    perceptual = build_lpips(args.perceptual_backbone, args.vgg_weights) if uses_perceptual(args) else None
    return LossCalculator(args, model.output_channels, config.data_args.frame_size, perceptual)


def discriminator_step(calc, optimizer, x, recon, step) -> dict:
    """What the trainer does with the discriminator at ``step``; {} when it is not due."""
    if not calc.discriminator_due(step):
        return {}
    d_loss, logs = calc.discriminator_loss(x, recon, step)
    optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    optimizer.step()
    return logs


class TinyAutoencoder(nn.Module):
    """The slice of the adapter interface the loss reads."""

    output_channels = 3

    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.decoder = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))

    @property
    def last_layer(self):
        return self.decoder[1].weight

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x):
        return torch.zeros(()), torch.tanh(self.decoder(self.encoder(x)))


GAN_ARGS = {"use_gan": True, "disc_start": 0, "disc_interval": 1, "perceptual_backbone": "random",
            "disc_ndf": 8, "disc_layers": 2}


def plain_calculator(**train_args):
    """``(model, loss, autoencoder optimizer, discriminator optimizer)``."""
    torch.manual_seed(0)
    model = TinyAutoencoder()
    config = make_config(train_args)
    calc = build_losses(model, config)
    optimizer, optimizer_disc, _ = build_optimizers(config.train_args, model, calc.discriminator)
    return model, calc, optimizer, optimizer_disc


def frames(n=4, seed=0):
    return torch.rand(n, 3, FRAME, FRAME, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- schedules and the adaptive weight ----------------------------------------------

def test_adopt_weight_switches_on_at_the_threshold():
    adopt = adopt_weight
    assert adopt(0.8, 49999, threshold=50000) == 0.0
    assert adopt(0.8, 50000, threshold=50000) == 0.8
    assert adopt(0.8, 0, threshold=0) == 0.8
    assert adopt(0.8, 3, threshold=10, value=0.1) == 0.1


def test_calculate_lambda_is_the_gradient_norm_ratio_at_the_last_layer():
    weight = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)  # a one-layer "decoder"
    x = torch.tensor([2.0, 1.0])
    target = torch.tensor([1.0, 1.0])
    y = weight @ x
    rec = ((y - target) ** 2).sum()
    gan = -(torch.tensor([1.0, 3.0]) * y).mean()
    # by hand: d rec/dW = 2 (y - t) x^T ; d gan/dW = -c x^T / 2
    residual = (y - target).detach()
    rec_grad = 2 * torch.outer(residual, x)
    gan_grad = -torch.outer(torch.tensor([1.0, 3.0]), x) / 2
    expected = rec_grad.norm() / (gan_grad.norm() + 1e-4)

    lam = adaptive_weight(rec, gan, weight, disc_weight=0.5)
    assert not lam.requires_grad
    assert lam.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)

    flat_gan = (weight * 0).sum()  # no GAN gradient: the ratio is clamped at 1e4
    assert adaptive_weight(rec, flat_gan, weight).item() == pytest.approx(1e4)


def test_calculate_lambda_without_a_graph_is_zero():
    weight = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        rec, gan = (weight * 2).sum(), weight.sum()
    assert adaptive_weight(rec, gan, weight).item() == 0.0


# -- adversarial objectives -----------------------------------------------------

def test_hinge_and_vanilla_values_on_fixed_logits():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.5])
    # hinge: real relu(1 - [2, .5]) = [0, .5]; fake relu(1 + [-2, .5]) = [0, 1.5]
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.75))
    softplus = lambda v: math.log1p(math.exp(v))
    vanilla = 0.5 * ((softplus(-2) + softplus(-0.5)) / 2 + (softplus(-2) + softplus(0.5)) / 2)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(vanilla)
    assert generator_loss(fake).item() == pytest.approx(0.75)


def test_patchgan_scores_patches():
    disc = NLayerDiscriminator(3, ndf=8, n_layers=3)
    assert disc(frames(2)).shape == (2, 1, 2, 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2


def test_frames_too_small_for_the_patchgan_are_a_config_error():
    with pytest.raises(ConfigError, match="train_args.disc_layers = 4"):
        plain_calculator(**{**GAN_ARGS, "disc_layers": 4, "use_perceptual": False})


# -- the objective ------------------------------------------------------------------

def test_without_gan_the_total_is_weighted_reconstruction_plus_vq():
    model, calc, _, optimizer_disc = plain_calculator(recon_loss="l1", pixel_loss_factor=2.0, codebook_weight=0.5)
    assert calc.discriminator is None and calc.perceptual_loss is None and optimizer_disc is None
    x = frames()
    recon = model(x)[1]
    out = calc.compute_total_loss(x, recon, torch.tensor(0.3), step=0)
    l1 = (recon - x).abs().mean()
    assert out["total_loss"].item() == pytest.approx(2.0 * l1.item() + 0.5 * 0.3, rel=1e-5)
    assert out["recon_error"].item() == pytest.approx(((recon - x) ** 2).mean().item(), rel=1e-5)
    assert out["perceptual_loss"] == 0.0 and out["g_loss"] == 0.0 and out["disc_factor"] == 0.0
    assert not any(calc.discriminator_due(step) for step in range(10))


def test_gan_total_is_perceptual_rec_plus_vq_plus_weighted_generator_loss():
    model, calc, _, _ = plain_calculator(**{**GAN_ARGS, "disc_factor": 0.8, "pixel_loss_factor": 0.5})
    x = frames()
    recon = model(x)[1]
    out = calc.compute_total_loss(x, recon, torch.tensor(0.1), step=0, last_layer=model.last_layer)
    rec = 0.5 * ((recon - x) ** 2).mean() + out["perceptual_loss"]
    expected = rec + 0.1 + 0.8 * out["lambda_gan"] * out["g_loss"]
    assert out["total_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["disc_factor"] == 0.8 and out["lambda_gan"].item() > 0


def test_generator_step_leaves_the_discriminator_untouched():
    model, calc, opt, _ = plain_calculator(**GAN_ARGS, use_perceptual=False)
    disc_before = params(calc.discriminator)
    ae_before = params(model)
    x = frames()
    out = calc.compute_total_loss(x, model(x)[1], torch.tensor(0.0), step=5, last_layer=model.last_layer)
    opt.zero_grad()
    out["total_loss"].backward()
    opt.step()
    assert same(disc_before, params(calc.discriminator))
    assert all(p.grad is None for p in calc.discriminator.parameters())
    assert not same(ae_before, params(model))


def test_discriminator_step_leaves_the_autoencoder_untouched():
    model, calc, _, opt_disc = plain_calculator(**GAN_ARGS, use_perceptual=False)
    x = frames()
    recon = model(x)[1]
    ae_before, disc_before = params(model), params(calc.discriminator)
    logs = discriminator_step(calc, opt_disc, x, recon, step=0)
    assert torch.isfinite(logs["d_loss"])
    assert same(ae_before, params(model)) and all(p.grad is None for p in model.parameters())
    assert not same(disc_before, params(calc.discriminator))


def test_discriminator_trains_every_disc_interval_steps_from_disc_start():
    model, calc, _, opt_disc = plain_calculator(**{**GAN_ARGS, "disc_interval": 3, "disc_start": 3,
                                                   "use_perceptual": False})
    x = frames()
    recon = model(x)[1].detach()
    updated = []
    for step in range(10):
        before = params(calc.discriminator)
        logs = discriminator_step(calc, opt_disc, x, recon, step)
        changed = not same(before, params(calc.discriminator))
        assert changed == bool(logs)
        updated.append(step) if changed else None
    assert updated == [3, 6, 9]


def test_instance_noise_decays_linearly_to_zero():
    _, calc, _, _ = plain_calculator(**{**GAN_ARGS, "instance_noise": 0.2, "use_perceptual": False})
    assert [calc.instance_noise_std(s) for s in (0, 10, 20, 30)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    x = frames()
    _, logs = calc.discriminator_loss(x, x.clone(), step=10)
    assert logs["instance_noise"] == pytest.approx(0.1)


def test_discriminator_state_restores_bit_for_bit(tmp_path):
    model, calc, _, opt_disc = plain_calculator(**{**GAN_ARGS, "use_perceptual": False})
    x = frames()
    recon = model(x)[1].detach()
    for step in range(3):
        discriminator_step(calc, opt_disc, x, recon, step)
    torch.save({"disc": calc.discriminator.state_dict(), "opt": opt_disc.state_dict()}, tmp_path / "disc.pt")

    _, resumed, _, resumed_opt = plain_calculator(**{**GAN_ARGS, "use_perceptual": False})
    saved = torch.load(tmp_path / "disc.pt", weights_only=True)
    resumed.discriminator.load_state_dict(saved["disc"])
    resumed_opt.load_state_dict(saved["opt"])
    a = discriminator_step(calc, opt_disc, x, recon, 3)
    b = discriminator_step(resumed, resumed_opt, x, recon, 3)
    assert torch.equal(a["d_loss"], b["d_loss"])
    assert same(params(calc.discriminator), params(resumed.discriminator))


# -- LPIPS and its weights --------------------------------------------------------

def test_lpips_is_zero_for_identical_frames_and_grows_with_noise():
    model, calc, _, _ = plain_calculator(use_perceptual=True, perceptual_backbone="random")
    calc.train()
    lpips = calc.perceptual_loss  # frozen: in no optimizer, always in eval mode
    assert all(not p.requires_grad for p in lpips.parameters()) and not lpips.training
    x = frames()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    lpips = [calc.compute_total_loss(x, x + s * noise, torch.tensor(0.0), 0)["perceptual_loss"].item()
             for s in (0.0, 0.1, 0.5)]
    assert lpips[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips[1] < lpips[2]


def test_lpips_loads_vgg16_weights_from_the_configured_file(tmp_path):
    import torchvision

    torch.manual_seed(3)  # vgg16().features without the 120M-parameter classifier
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    _, calc, _, _ = plain_calculator(use_perceptual=True, perceptual_backbone="vgg", vgg_weights=str(path))
    assert torch.equal(calc.perceptual_loss.net.slice1[0].weight, features["0.weight"])
    assert torch.equal(calc.perceptual_loss.net.slice5.get_submodule("28").weight, features["28.weight"])


def test_missing_vgg_weights_stop_construction_with_one_line(empty_hub):
    with pytest.raises(WeightsMissingError) as err:
        plain_calculator(use_gan=True, disc_start=0, disc_ndf=8, disc_layers=2)
    message = str(err.value)
    assert "\n" not in message and VGG16_FILE in message and "train_args.vgg_weights" in message
    assert str(empty_hub / "hub") in message

    missing = empty_hub / "nowhere.pth"
    with pytest.raises(WeightsMissingError, match="nowhere.pth"):
        plain_calculator(use_perceptual=True, vgg_weights=str(missing))


# -- the model families -------------------------------------------------------------

VQVAE2_TINY = {"n_hid": 8, "res_channels": 4, "nb_res_layers": 1, "nb_levels": 2, "n_init": 8, "vocab_size": 16}
TAMING_TINY = {
    "vocab_size": 16, "n_init": 8,
    "ddconfig": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 8,
                 "resolution": FRAME},
    # LPIPS off in the loop (tested above); the discriminator as small as the plain path's
    "lossconfig": {"disc_start": 0, "disc_num_layers": 2, "disc_ndf": 8, "perceptual_weight": 0.0},
}
CAUSAL_VIDEO_TINY = {"ch": 4, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
                     "quantizer": {"type": "fsq", "levels": [5, 5, 5]}}
# (adapter module, class, model_type, tiny model_args, scaling_rates)
FAMILIES = {
    "vq_vae": ("models.vq_vae.adapter", "VqVae2Adapter", "VqVae2",
               {"group_count": 2, "n_hid": 4, "n_blk_per_group": 1, "vocab_size": 16, "n_init": 8}, None),
    "vqvae2": ("models.vqvae2.adapter", "VQVAEAdapter", "vqvae2", VQVAE2_TINY, [2, 2]),
    "vqvae2_optvq": ("models.vqvae2_optvq.adapter", "VqvaeOptVQAdapter", "vqvae2optvq", VQVAE2_TINY, [2, 2]),
    "taming_vqgan": ("models.taming.adapter", "TamingVQGANAdapter", "taming_vqgan", TAMING_TINY, None),
    "causal_video": ("models.causal_video.adapter", "CausalVideoAdapter", "causal_video", CAUSAL_VIDEO_TINY, None),
}


def family_model(name, train_args, **model_args_update):
    """``(model, loss, autoencoder optimizer, discriminator optimizer)`` of a tiny model of ``name``."""
    module_name, class_name, model_type, model_args, scaling_rates = FAMILIES[name]
    model_args = {**model_args, **model_args_update}
    try:
        adapter_class = getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError as err:
        pytest.skip(f"{name}: adapter not in the tree ({err})")
    args = structure(adapter_class.args_class, model_args, "model_args")
    config = make_config(train_args, model_args=args, model_type=model_type, scaling_rates=scaling_rates)
    torch.manual_seed(0)
    model = adapter_class(args, config)
    calc = build_losses(model, config)
    optimizer, optimizer_disc, _ = build_optimizers(config.train_args, model, calc.discriminator)
    return model, calc, optimizer, optimizer_disc


@pytest.fixture(scope="module")
def bikes_frames():
    """Four consecutive real frames of bikes.mp4 at 32x32, in [-1, 1]."""
    return real_frames(4, FRAME)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_twenty_gan_steps_on_real_frames_have_finite_losses(family, bikes_frames):
    # LPIPS is left out: it does not depend on the family and is tested above
    model, calc, opt, opt_disc = family_model(family, {**GAN_ARGS, "use_perceptual": False})
    updates = 0
    for step in range(20):
        vq_loss, recon, _, _ = model(bikes_frames)
        out = calc.compute_total_loss(bikes_frames, recon, vq_loss, step, model.last_layer)
        opt.zero_grad()
        out["total_loss"].backward()
        opt.step()
        logs = discriminator_step(calc, opt_disc, bikes_frames, recon.detach(), step)
        for key, value in {**out, **logs}.items():
            assert torch.isfinite(torch.as_tensor(value).detach()), f"{family} step {step}: {key} = {value}"
        updates += bool(logs)
    assert updates == 20


# -- Taming: upstream's loss as this family's defaults ----------------------------------

def taming(use_gan=True, train_args=None, **lossconfig):
    return family_model("taming_vqgan", {"use_gan": use_gan, "perceptual_backbone": "random", **(train_args or {})},
                        lossconfig={**TAMING_TINY["lossconfig"], **lossconfig})


def test_taming_lossconfig_sets_the_defaults_of_the_shared_keys():
    model, calc, opt_ae, opt_disc = taming(disc_start=7, codebook_weight=0.5, disc_num_layers=2, disc_loss="vanilla")
    args = calc.args
    assert (args.recon_loss, args.disc_start, args.codebook_weight, args.disc_layers, args.disc_loss) == (
        "l1", 7, 0.5, 2, "vanilla")
    assert args.disc_interval == 1 and args.use_perceptual
    ae = {id(p) for p in opt_ae.param_groups[0]["params"]}
    disc = {id(p) for p in opt_disc.param_groups[0]["params"]}
    assert ae == {id(p) for p in model.trainable_parameters()} and not ae & disc
    assert disc == {id(p) for p in calc.discriminator.parameters()}
    for opt in (opt_ae, opt_disc):  # upstream: both Adam at the base rate, betas (0.5, 0.9)
        assert opt.param_groups[0]["betas"] == (0.5, 0.9) and opt.param_groups[0]["lr"] == 1e-4
    _, explicit, _, _ = taming(disc_start=7, train_args={"disc_start": 3, "recon_loss": "mse"})
    assert (explicit.args.disc_start, explicit.args.recon_loss) == (3, "mse")  # train_args win


def test_taming_discriminator_waits_for_disc_start(bikes_frames):
    model, calc, _, opt_disc = taming(disc_start=3)
    with torch.no_grad():
        recon = model(bikes_frames)[1]
    updated = []
    for step in range(5):
        before = params(calc.discriminator)
        logs = discriminator_step(calc, opt_disc, bikes_frames, recon, step)
        assert bool(logs) == (not same(before, params(calc.discriminator)))
        updated.append(int(bool(logs)))
    assert updated == [0, 0, 0, 1, 1]


def test_taming_without_use_gan_keeps_the_discriminator_out(bikes_frames):
    model, calc, _, opt_disc = taming(use_gan=False)
    assert calc.discriminator is None and opt_disc is None
    vq_loss, recon, _, _ = model(bikes_frames)
    out = calc.compute_total_loss(bikes_frames, recon, vq_loss, step=10)
    assert out["disc_factor"] == 0.0
    expected = (recon - bikes_frames).abs().mean() + vq_loss  # L1 + codebook (LPIPS weight 0 here)
    assert out["total_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_taming_missing_vgg_weights_stop_construction(empty_hub):
    with pytest.raises(WeightsMissingError, match="train_args.vgg_weights"):
        family_model("taming_vqgan", {"use_gan": True}, lossconfig={**TAMING_TINY["lossconfig"], "perceptual_weight": 1.0})


def test_a_perceptual_weight_of_zero_runs_no_lpips():
    """Issue: Taming's perceptual_weight 0 still ran VGG16 every step (a quarter of the bare loop's speed)."""
    assert uses_perceptual(make_config({"use_perceptual": True, "perceptual_loss_factor": 1.0}).train_args)
    assert not uses_perceptual(make_config({"use_perceptual": True, "perceptual_loss_factor": 0.0}).train_args)
