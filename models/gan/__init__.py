"""GAN parts for the non-Taming model families (Taming brings its own in models/taming)."""
from models.gan.discriminator import PatchGANDiscriminator, min_frame_size
from models.gan.losses import D_LOSSES, generator_loss, hinge_d_loss, vanilla_d_loss

__all__ = ["PatchGANDiscriminator", "min_frame_size", "D_LOSSES", "generator_loss", "hinge_d_loss", "vanilla_d_loss"]
