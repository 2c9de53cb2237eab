"""``model_type: VQVAE2_OptVQ`` / ``vqvae2optvq``: VQVAE2's ``model_args`` plus OptVQ's quantizer fields.

The VQVAE2 fields are translated by ``models.vqvae2.adapter.MODEL_ARG_NAMES``; the
OptVQ fields keep their names (they are the quantizer's own).
"""
from typing import Literal

import attrs

from models.vqvae2.adapter import VQVAEAdapter, VQVAEArgs
from models.vqvae2_optvq.vqvae import VQVAE
from core.config_schema import non_negative, positive, require


@attrs.frozen
class VqvaeOptVQArgs(VQVAEArgs):
    """``model_args`` of VQVAE2_OptVQ: those of VQVAE2 and the Sinkhorn quantizer's."""

    commitment_cost: float = attrs.field(default=1.0, validator=non_negative)  # OptVQ's weight
    # optimal transport already spreads the codes; restarts are an option, off by default
    dead_code_threshold: float = attrs.field(default=0.0, validator=non_negative)
    epsilon: float = attrs.field(default=10.0, validator=positive)  # inverse temperature of exp(-cost * epsilon)
    n_iters: int = attrs.field(default=5, validator=positive)  # Sinkhorn iterations
    normalize_mode: Literal["all", "dim", "null"] = "all"  # scale of the distances before the exp
    use_prob: bool = False  # sample each code from the transport plan instead of taking its argmax
    num_head: int = attrs.field(default=1, validator=positive)  # heads sharing one codebook
    use_proj: bool = True  # see the codebook through a learned linear map
    loss_q_type: Literal["l2", "l1", "ce"] = "l2"
    beta: float = attrs.field(default=0.25, validator=non_negative)  # weight of the codebook term

    def __attrs_post_init__(self):
        require(
            self.n_init % self.num_head == 0,
            f"num_head = {self.num_head}: expected a divisor of n_init ({self.n_init}), the code dimension",
        )


class VqvaeOptVQAdapter(VQVAEAdapter):
    """VQVAE2_OptVQ behind the common interface; everything but the quantizer is VQVAE2's."""

    args_class = VqvaeOptVQArgs
    model_class = VQVAE

