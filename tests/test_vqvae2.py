"""VQVAE2: the hierarchical VQ-VAE-2 with EMA codebooks, behind VQVAEAdapter."""
import inspect
import json
import os

import attrs
import pytest
import torch
import torch.multiprocessing as mp

from models.builders import create_model, resolve_adapter
from models.vqvae2 import VQVAE, VectorQuantizerEMA
from models.vqvae2.adapter import MODEL_ARG_NAMES, VQVAEAdapter, VQVAEArgs, model_kwargs
from tests import vqvae2_contract as contract
from tests.helpers import real_frames
from models.builders import load_config
from core.config_schema import ConfigError

CONFIGS = {  # scaling_rates -> index shapes of 8 frames of 32 x 32, bottom level first
    (4,): [(8, 8, 8)],
    (2, 2): [(8, 16, 16), (8, 8, 8)],
}


@pytest.fixture(scope="module")
def frames():
    return real_frames(8, 32)


def vqvae2(scaling_rates, seed=0, **model_args):
    return contract.build(contract.make_config("VQVAE2", list(scaling_rates), **model_args), seed)


@pytest.mark.parametrize("scaling_rates", CONFIGS)
def test_forward_contract(frames, scaling_rates):
    contract.check_output_contract(vqvae2(scaling_rates), frames, CONFIGS[scaling_rates])


def test_gradients_reach_every_level_and_codebooks_are_buffers(frames):
    adapter = vqvae2((2, 2))
    contract.check_gradients(adapter, frames)
    parameters = {id(p) for p in adapter.parameters()}
    assert all(id(q.codebook) not in parameters for q in adapter.model.quantizers)


def test_overfits_one_real_batch(frames):
    contract.check_overfits(vqvae2((2, 2)), frames)


def test_decode_inverts_encode(frames):
    contract.check_decode_inverts_encode(vqvae2((2, 2)), frames)


def test_encode_changes_no_state(frames):
    contract.check_encode_is_pure(vqvae2((2, 2)), frames)


def test_state_dict_round_trip(frames, tmp_path):
    config = contract.make_config("VQVAE2", [2, 2])
    contract.check_state_dict_round_trip(config, frames, tmp_path)


def test_quantizers_stay_fp32_under_bf16_autocast(frames):
    contract.check_quantizers_stay_fp32_under_autocast(vqvae2((2, 2)), frames[:2])


def test_decode_wants_bottom_level_first(frames):
    adapter = vqvae2((2, 2)).eval()
    indices = adapter.encode(frames)
    for wrong in (indices[::-1], indices[:1]):
        with pytest.raises(ValueError, match="bottom level first"):
            adapter.decode(wrong)


def test_translation_table():
    assert MODEL_ARG_NAMES == {
        "input_channels": "in_channels",
        "output_channels": "out_channels",
        "n_hid": "hidden_channels",
        "n_init": "embed_dim",
        "vocab_size": "nb_entries",
    }
    kwargs = model_kwargs(VQVAEArgs())
    assert set(kwargs) == set(inspect.signature(VQVAE).parameters) - {"scaling_rates", "quantizer"}


def test_translated_args_reach_the_model():
    # the model takes any channel counts; a training config must say 3 (RGB frames), so build it directly
    config = contract.make_config("VQVAE2", [2])
    args = attrs.evolve(config.model_args, input_channels=1, output_channels=2, n_hid=12, n_init=6, vocab_size=7,
                        decay=0.9, commitment_cost=0.5, dead_code_threshold=0.25)
    adapter = VQVAEAdapter(args, config)
    quantizer = adapter.model.quantizers[0]
    assert tuple(quantizer.codebook.shape) == (7, 6)
    assert (quantizer.decay, quantizer.commitment_cost, quantizer.dead_code_threshold) == (0.9, 0.5, 0.25)
    assert adapter.model.encoders[0].layers[0].in_channels == 1
    assert adapter.model.encoders[0].layers[-2].out_channels == 12
    assert adapter(torch.zeros(2, 1, 16, 16)).recon.shape == (2, 2, 16, 16)
    assert adapter.output_channels == 2 and adapter.vocab_sizes == [7] and adapter.spatial_factor == 2


@pytest.mark.parametrize(
    "scaling_rates, nb_levels, message",
    [
        ([4, 2], 3, "scaling_rates = [4, 2]: expected one rate per level, model_args.nb_levels = 3"),
        ([4, 3], 2, "scaling_rates = [4, 3]: expected a list of model_args.nb_levels (2) powers of 2"),
        (None, 2, "scaling_rates = None: expected a list of model_args.nb_levels (2) powers of 2"),
    ],
)
def test_scaling_rates_are_checked_against_nb_levels(scaling_rates, nb_levels, message):
    with pytest.raises(ConfigError) as error:
        contract.make_config("VQVAE2", scaling_rates, nb_levels=nb_levels)
    assert str(error.value).startswith(message)


def test_resolution_must_divide_by_the_total_downsampling():
    with pytest.raises(ConfigError, match=r"data_args.resolution = 36: expected multiples of 8"):
        contract.make_config("VQVAE2", [4, 2], resolution=36)


def test_bad_model_arg_names_its_key():
    with pytest.raises(ConfigError, match=r"model_args.vocab_size = 1: expected an integer >= 2"):
        contract.make_config("VQVAE2", [2], vocab_size=1)


def test_codes_start_as_vectors_of_the_first_training_batch():
    torch.manual_seed(0)
    quantizer = VectorQuantizerEMA(vocab_size=4, dim=3, decay=1.0)  # decay 1: the EMA keeps the initial codes
    z = torch.randn(2, 3, 4, 4)
    initial = quantizer.codebook.clone()
    quantizer.eval()(z)
    assert torch.equal(quantizer.codebook, initial) and not quantizer.initialized
    quantizer.train()(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert quantizer.initialized
    assert all((vectors == code).all(dim=1).any() for code in quantizer.codebook)


def test_dead_codes_restart_from_batch_vectors():
    torch.manual_seed(0)
    quantizer = VectorQuantizerEMA(vocab_size=4, dim=3, dead_code_threshold=1.0).train()
    quantizer.initialized.fill_(True)
    quantizer.codebook[0] = 0.0  # every vector's nearest code: codes 1-3 stay unused and die
    quantizer.codebook[1:] = 100.0
    quantizer.embed_avg.copy_(quantizer.codebook)
    z = torch.randn(2, 3, 4, 4)
    quantizer(z)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert all((vectors == code).all(dim=1).any() for code in quantizer.codebook[1:])
    # a restarted code starts with the cluster size an average code had (code 0 took all 32 vectors)
    average = (0.99 + 0.01 * 32 + 3 * 0.99) / 4
    torch.testing.assert_close(quantizer.cluster_size[1:], torch.full((3,), average))
    assert not (vectors == quantizer.codebook[0]).all(dim=1).any()  # the used code keeps its EMA mean


def _ema_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        quantizer = VectorQuantizerEMA(vocab_size=8, dim=4).train()
        quantizer.initialized.fill_(True)  # start from the same codebook as the single process
        z = torch.randn(4, 4, 3, 3)
        quantizer(z.chunk(world_size)[rank])  # each rank sees its half of the batch
        torch.save(quantizer.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ema_statistics_are_all_reduced_across_ranks(tmp_path):
    mp.start_processes(_ema_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    torch.manual_seed(0)
    single = VectorQuantizerEMA(vocab_size=8, dim=4).train()
    single.initialized.fill_(True)
    single(torch.randn(4, 4, 3, 3))  # one process, the whole batch
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value)


def test_config_file_builds_the_model_and_checks_its_levels(tmp_path):
    config = load_config("configs/vqvae2.json")
    adapter = create_model(config=config)
    assert isinstance(adapter, VQVAEAdapter)
    assert resolve_adapter("VQVAE2") is resolve_adapter("vqvae2") is VQVAEAdapter
    assert adapter.latent_shapes((1, 3, 64, 64)) == [(1, 16, 16), (1, 8, 8)]
    broken = {**config.raw, "model_args": {**config.raw["model_args"], "nb_levels": 3}}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match=r"broken.json: scaling_rates = \[4, 2\]: .*model_args.nb_levels = 3"):
        load_config(str(path))
