"""VQVAE2 with OptVQ's quantizer: the hierarchical VQ-VAE-2, codes assigned by optimal transport."""
from models.quantizers import FamilySettings, QuantizerSpec
from models.vqvae2.vqvae import VQVAE as HierarchicalVQVAE


class VQVAE(HierarchicalVQVAE):
    """``models.vqvae2.VQVAE`` whose default quantizer is ``sinkhorn`` (``SinkhornQuantizer``) at every level.

    The keyword arguments after ``**vqvae_args`` configure the Sinkhorn quantizer; ``decay``
    drives its usage count, ``commitment_cost`` (OptVQ's is 1) and ``dead_code_threshold``
    mean what they mean for every codebook.
    """

    default_quantizer = QuantizerSpec("sinkhorn")

    def __init__(self, epsilon: float = 10.0, n_iters: int = 5, normalize_mode: str = "all",
                 use_prob: bool = False, num_head: int = 1, use_proj: bool = True,
                 loss_q_type: str = "l2", beta: float = 0.25, commitment_cost: float = 1.0, **vqvae_args):
        self.sinkhorn_options = dict(epsilon=epsilon, n_iters=n_iters, normalize_mode=normalize_mode,
                                     use_prob=use_prob, num_head=num_head, use_proj=use_proj,
                                     loss_q_type=loss_q_type, beta=beta)
        super().__init__(**vqvae_args, commitment_cost=commitment_cost)

    def quantizer_settings(self, decay: float, commitment_cost: float, dead_code_threshold: float) -> FamilySettings:
        return FamilySettings(commitment_cost=commitment_cost, decay=decay, dead_code_threshold=dead_code_threshold,
                              sinkhorn=self.sinkhorn_options)
