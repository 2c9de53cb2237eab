"""VQVAE2_OptVQ: the hierarchical VQ-VAE-2 with OptVQ's Sinkhorn quantizer, behind VqvaeOptVQAdapter."""
import inspect
import os

import attrs
import pytest
import torch
import torch.nn.functional as F
import torch.multiprocessing as mp

from models.builders import create_model, resolve_adapter
from models.vqvae2.adapter import VQVAEArgs, model_kwargs
from models.vqvae2.vqvae import VQVAE as HierarchicalVQVAE
from models.vqvae2_optvq import VQVAE, SinkhornQuantizer, normalize_cost, sinkhorn
from models.vqvae2_optvq.adapter import VqvaeOptVQAdapter, VqvaeOptVQArgs
from tests import vqvae2_contract as contract
from tests.helpers import real_frames
from models.builders import load_config
from core.config_schema import ConfigError

CONFIGS = {  # (scaling_rates, num_head) -> index shapes of 8 frames of 32 x 32, bottom level first
    ((2, 2), 1): [(8, 16, 16), (8, 8, 8)],
    ((2, 2, 2), 2): [(8, 2, 16, 16), (8, 2, 8, 8), (8, 2, 4, 4)],
}


@pytest.fixture(scope="module")
def frames():
    return real_frames(8, 32)


def optvq(scaling_rates=(2, 2), seed=0, **model_args):
    config = contract.make_config("VQVAE2_OptVQ", list(scaling_rates), **model_args)
    return contract.build(config, seed)


@pytest.mark.parametrize("scaling_rates, num_head", CONFIGS)
def test_forward_contract(frames, scaling_rates, num_head):
    adapter = optvq(scaling_rates, num_head=num_head)
    contract.check_output_contract(adapter, frames, CONFIGS[scaling_rates, num_head])


@pytest.mark.parametrize("loss_q_type", ["l2", "l1", "ce"])
def test_gradients_reach_every_level_and_the_codebook(frames, loss_q_type):
    adapter = optvq(loss_q_type=loss_q_type)
    contract.check_gradients(adapter, frames)
    for quantizer in adapter.model.quantizers:
        assert quantizer.embedding.weight.grad.abs().sum() > 0
        assert quantizer.proj.weight.grad.abs().sum() > 0


def test_overfits_one_real_batch(frames):
    contract.check_overfits(optvq(), frames)


def test_decode_inverts_encode(frames):
    contract.check_decode_inverts_encode(optvq(num_head=2), frames)


def test_encode_changes_no_state(frames):
    contract.check_encode_is_pure(optvq(dead_code_threshold=1.0), frames)


def test_encode_assigns_as_training_does_after_training(frames):
    """Issue: training took the plan's argmax, encode the nearest code (21.6% agreement after 60 steps)."""
    torch.manual_seed(0)
    adapter = optvq()
    optimizer = torch.optim.Adam(adapter.parameters(), lr=1e-3)
    for _ in range(10):
        out = adapter.train()(frames)
        optimizer.zero_grad()
        (F.mse_loss(out.recon, frames) + out.vq_loss).backward()
        optimizer.step()
    with torch.no_grad():
        trained = adapter.train()(frames).indices  # a training forward's assignment (no update under no_grad)
    encoded = adapter.eval().encode(frames)
    agreement = torch.stack([(a == b).float().mean() for a, b in zip(trained, encoded)]).mean()
    assert agreement >= 0.95


def test_state_dict_round_trip(frames, tmp_path):
    config = contract.make_config("VQVAE2_OptVQ", [2, 2], num_head=2)
    contract.check_state_dict_round_trip(config, frames, tmp_path)


def test_quantizers_stay_fp32_under_bf16_autocast(frames):
    contract.check_quantizers_stay_fp32_under_autocast(optvq(), frames[:2])


def test_args_extend_vqvae2_args_and_reach_the_quantizer():
    assert issubclass(VqvaeOptVQArgs, VQVAEArgs)
    vqvae_fields = {field.name for field in attrs.fields(VQVAEArgs)}
    optvq_fields = {field.name for field in attrs.fields(VqvaeOptVQArgs)} - vqvae_fields
    assert optvq_fields == {"epsilon", "n_iters", "normalize_mode", "use_prob", "num_head", "use_proj",
                            "loss_q_type", "beta"}
    accepted = set(inspect.signature(VQVAE).parameters) | set(inspect.signature(HierarchicalVQVAE).parameters)
    assert set(model_kwargs(VqvaeOptVQArgs())) <= accepted
    adapter = optvq((2,), n_init=8, vocab_size=7, epsilon=3.0, n_iters=2, normalize_mode="dim", use_prob=True,
                    num_head=4, use_proj=False, loss_q_type="l1", beta=0.5, commitment_cost=0.75, decay=0.9)
    quantizer = adapter.model.quantizers[0]
    assert tuple(quantizer.codebook().shape) == (7, 2) and quantizer.proj is None
    assert (quantizer.epsilon, quantizer.n_iters, quantizer.normalize_mode) == (3.0, 2, "dim")
    assert quantizer.use_prob and quantizer.num_head == 4
    assert (quantizer.loss_q_type, quantizer.beta, quantizer.commitment_cost, quantizer.decay) == ("l1", 0.5, 0.75, 0.9)


@pytest.mark.parametrize(
    "model_args, message",
    [
        ({"normalize_mode": "max"}, "model_args.normalize_mode = 'max': expected one of 'all', 'dim', 'null'"),
        ({"loss_q_type": "l3"}, "model_args.loss_q_type = 'l3': expected one of 'l2', 'l1', 'ce'"),
        ({"n_init": 8, "num_head": 3}, "model_args.num_head = 3: expected a divisor of n_init (8)"),
        ({"epsilon": 0}, "model_args.epsilon = 0.0: expected a value > 0"),
    ],
)
def test_bad_model_args_name_their_key(model_args, message):
    with pytest.raises(ConfigError) as error:
        contract.make_config("VQVAE2_OptVQ", [2], **model_args)
    assert str(error.value).startswith(message)


def test_scaling_rates_are_checked_against_nb_levels():
    expected = r"scaling_rates = \[2, 2\]: expected one rate per level, model_args.nb_levels = 3"
    with pytest.raises(ConfigError, match=expected):
        contract.make_config("VQVAE2_OptVQ", [2, 2], nb_levels=3)


def test_sinkhorn_plan_has_uniform_marginals():
    torch.manual_seed(0)
    n_vectors, n_codes = 96, 12
    cost = normalize_cost(torch.cdist(torch.randn(n_vectors, 4), torch.randn(n_codes, 4)), "all", 4)
    plan = sinkhorn(cost, n_iters=20, epsilon=3.0)
    assert plan.shape == (n_vectors, n_codes) and torch.all(plan >= 0)
    torch.testing.assert_close(plan.sum(dim=1), torch.full((n_vectors,), 1 / n_vectors))
    torch.testing.assert_close(plan.sum(dim=0), torch.full((n_codes,), 1 / n_codes), rtol=1e-3, atol=1e-5)


def test_sinkhorn_spreads_a_collapsed_assignment():
    torch.manual_seed(0)
    vectors, codes = torch.randn(64, 4) * 0.1, torch.randn(8, 4)
    codes[0] = 0.0  # the nearest code of every vector
    cost = torch.cdist(vectors, codes)
    assert cost.argmin(dim=1).unique().numel() == 1
    plan = sinkhorn(normalize_cost(cost, "all", 4), n_iters=5, epsilon=10.0)
    assert plan.argmax(dim=1).unique().numel() == 8


def test_plan_is_unchanged_by_row_shifts_and_all_mode_by_scale():
    torch.manual_seed(0)
    cost = torch.rand(32, 6)
    plan = sinkhorn(normalize_cost(cost, "all", 4), n_iters=5, epsilon=10.0)
    scaled = sinkhorn(normalize_cost(3 * cost, "all", 4), n_iters=5, epsilon=10.0)
    shifted = sinkhorn(normalize_cost(cost, "all", 4) + torch.randn(32, 1), n_iters=5, epsilon=10.0)
    torch.testing.assert_close(scaled, plan)
    torch.testing.assert_close(shifted, plan)


def test_use_prob_samples_codes_from_the_plan():
    torch.manual_seed(0)
    quantizer = SinkhornQuantizer(nb_entries=16, dim=4, use_prob=True, epsilon=1.0).train()
    z = torch.randn(4, 4, 8, 8)
    first, second = quantizer(z)[2], quantizer(z)[2]
    assert not torch.equal(first, second)  # a different draw from the same plan
    assert first.unique().numel() > 8


def test_dead_codes_restart_through_the_projection():
    torch.manual_seed(0)
    quantizer = SinkhornQuantizer(nb_entries=6, dim=3, dead_code_threshold=1.0).train()
    quantizer.usage[:3] = 0.0  # codes 0-2 dead, codes 3-5 alive
    z = torch.randn(2, 3, 4, 4)
    alive = quantizer.codebook()[3:].detach().clone()
    quantizer(z)
    codebook = quantizer.codebook().detach()
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    for code in codebook[:3]:  # each restarted code, seen through the projection, is a batch vector
        assert torch.cdist(code[None], vectors).min() < 1e-3
    torch.testing.assert_close(codebook[3:], alive)


def _sinkhorn_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        quantizer = SinkhornQuantizer(nb_entries=8, dim=4).train()
        z = torch.randn(4, 4, 3, 3)
        indices = quantizer(z.chunk(world_size)[rank])[2]  # each rank sees its half of the batch
        torch.save({"indices": indices, "usage": quantizer.usage}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_sinkhorn_marginals_are_global_across_ranks(tmp_path):
    mp.start_processes(_sinkhorn_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    torch.manual_seed(0)
    single = SinkhornQuantizer(nb_entries=8, dim=4).train()
    indices = single(torch.randn(4, 4, 3, 3))[2]  # one process, the whole batch
    for rank, expected in enumerate(indices.chunk(2)):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(result["indices"], expected)
        torch.testing.assert_close(result["usage"], single.usage)


def test_config_file_builds_the_model():
    adapter = create_model(config=load_config("configs/vqvae2_optvq.json"))
    assert isinstance(adapter, VqvaeOptVQAdapter)
    assert resolve_adapter("VQVAE2_OptVQ") is resolve_adapter("vqvae2optvq") is VqvaeOptVQAdapter
    assert all(isinstance(q, SinkhornQuantizer) for q in adapter.model.quantizers)
    assert adapter.latent_shapes((1, 3, 64, 64)) == [(1, 16, 16), (1, 8, 8)]
