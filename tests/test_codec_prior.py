"""The code prior lives with the model: refreshed by one call, kept in the checkpoint, state-dict keys unchanged."""
import numpy as np
import pytest
import torch

import codec.prior
from codec.bitstream import CodecError, read_header
from codec.codec import compress, decompress, load_codec_model
from codec.prior import prior_sequences
from codec.video_io import write_video
from core.checkpoint import CheckpointError, load_checkpoint
from models.builders import config_from_dict
from tests.codec_helpers import TINY, clip, still_clip, tiny_checkpoint
from tests.helpers import tiny_config
from train.train_custom_videos import build_trainer

FAMILIES = [name for name in TINY if name != "FakeResidual"]


def runs(frames: np.ndarray, length: int = 8):
    """Runs of consecutive frames ``(T, 3, H, W)`` in [0, 1], as ``update_code_prior`` takes them."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return [x[i:i + length] for i in range(0, len(x), length)]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_update_keeps_the_prior_on_the_model_and_the_state_dict_keys_unchanged(tmp_path, model_type):
    codec = load_codec_model(tiny_checkpoint(tmp_path, model_type))
    model = codec.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.code_prior is None and model.code_prior_state() is None
    prior = model.update_code_prior(runs(still_clip(16, 16, 16)), source="test clips")
    assert model.code_prior is prior and prior.source == "test clips"
    assert prior.num_indices > 0 and prior.has_context(0)
    after = model.state_dict()
    assert list(after) == list(before)  # Taming's upstream names, and no new key in any family
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_the_prior_travels_in_the_checkpoint_and_codes(tmp_path):
    model = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN")).model
    model.update_code_prior(runs(still_clip(24, 16, 16, seed=1)))
    checkpoint = tiny_checkpoint(tmp_path / "fitted", "TamingVQGAN", code_prior=model.code_prior_state())
    codec = load_codec_model(checkpoint)
    assert codec.model.code_prior.digest == model.code_prior.digest

    frames = still_clip(12, 16, 16, seed=2)
    for coder in ("prior", "context_prior"):
        data = compress(codec, frames, 25.0, coder=coder)
        header = read_header(data)[0]
        assert header.levels[0].coder == coder and header.prior_hash == model.code_prior.digest
        np.testing.assert_array_equal(decompress(codec, data)[0], decompress(codec, compress(codec, frames, 25.0,
                                                                                             coder="uniform"))[0])
    auto = read_header(compress(codec, frames, 25.0))[0]
    assert set(auto.levels[0].costs) == {"uniform", "prior", "adaptive", "context", "context_prior"}

    plain = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN"))
    with pytest.raises(CodecError, match="code prior"):
        decompress(plain, compress(codec, frames, 25.0, coder="context_prior"))
    with pytest.raises(CodecError, match="no code prior"):
        compress(plain, frames, 25.0, coder="prior")


def test_a_refitted_prior_is_refused(tmp_path):
    model = load_codec_model(tiny_checkpoint(tmp_path, "TamingVQGAN")).model
    model.update_code_prior(runs(still_clip(16, 16, 16, seed=1)))
    coder = load_codec_model(tiny_checkpoint(tmp_path / "a", "TamingVQGAN", code_prior=model.code_prior_state()))
    model.update_code_prior(runs(still_clip(16, 16, 16, seed=5)))
    other = load_codec_model(tiny_checkpoint(tmp_path / "b", "TamingVQGAN", code_prior=model.code_prior_state()))
    with pytest.raises(CodecError, match="code prior .* holds code prior"):
        decompress(other, compress(coder, still_clip(8, 16, 16), 25.0, coder="prior"))


def test_first_format_priors_still_load_as_frequencies(tmp_path):
    counts = [torch.arange(16), torch.ones(16, dtype=torch.long)]
    codec = load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2", code_prior={"counts": counts, "source": "old",
                                                                             "num_indices": 136}))
    prior = codec.model.code_prior
    np.testing.assert_array_equal(prior.levels[0][0].digits[0].intra, np.arange(16))
    assert not prior.has_context(0)
    header = read_header(compress(codec, clip(4, 16, 16), 25.0))[0]
    assert set(header.levels[0].costs) == {"uniform", "prior", "adaptive", "context"}


@pytest.mark.parametrize("entry, message", [
    ({"counts": [torch.ones(8), torch.ones(16)]}, "digits of \\[8\\] values"),
    ({"counts": [torch.ones(16)]}, "1 level"),
    ({"counts": [-torch.ones(16), torch.ones(16)]}, "negative"),
    ({"levels": "nonsense"}, "malformed"),
    ([1, 2], "malformed"),
])
def test_a_prior_that_does_not_fit_the_model_is_one_clear_error(tmp_path, entry, message):
    with pytest.raises(CheckpointError, match=message):
        load_codec_model(tiny_checkpoint(tmp_path, "VQVAE2", code_prior=entry))


def test_prior_runs_are_read_at_the_videos_own_scale(tmp_path):
    write_video(str(tmp_path / "a.mp4"), clip(20, 40, 52), fps=25.0)
    model = load_codec_model(tiny_checkpoint(tmp_path, "VqVae2")).model  # trained at 16x16
    got = list(prior_sequences([str(tmp_path / "a.mp4")], model, sequences=3, clips=2, crop=128))
    assert [tuple(r.shape) for r in got] == [(8, 3, 40, 52)] * 3  # whole frames: smaller than the crop
    cropped = list(prior_sequences([str(tmp_path / "a.mp4")], model, sequences=2, clips=2, crop=32))
    assert {tuple(r.shape) for r in cropped} == {(8, 3, 32, 32)}
    assert not torch.equal(cropped[0], cropped[1])  # spread over time and place
    resized = list(prior_sequences([str(tmp_path / "a.mp4")], model, sequences=1, clips=1, size=(21, 27)))
    assert tuple(resized[0].shape) == (4, 3, 20, 26)  # the size of use, in whole latent positions


def test_cli_fit_prior_rewrites_the_checkpoint(tmp_path, capsys):
    from codec.cli import main

    data_dir = tmp_path / "videos"
    write_video(str(data_dir / "a.mp4"), np.concatenate([still_clip(12, 24, 20), clip(12, 24, 20)]), fps=25.0)
    checkpoint = tiny_checkpoint(tmp_path, "VqVae2")
    assert main(["fit-prior", "--checkpoint", checkpoint, "--data", str(data_dir), "--sequences", "2",
                 "--clips", "3", "--device", "cpu", "--quiet"]) == 0
    assert "code prior of 720 indices" in capsys.readouterr().out  # 2 runs x 3 clips x 12x10 positions
    entry = load_checkpoint(checkpoint)["code_prior"]
    assert entry["version"] == 2 and str(data_dir) in entry["source"] and entry["num_indices"] == 720
    codec = load_codec_model(checkpoint)
    assert codec.model.code_prior.has_context(0)
    assert "context_prior" in read_header(compress(codec, clip(8), 25.0))[0].levels[0].costs


def test_training_fits_the_prior_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(codec.prior, "SEQUENCES", 4)  # a test-sized fit
    data = tiny_config(tmp_path, train_args={"num_steps": 2, "fit_prior": True, "save_interval": 2,
                                             "validation_interval": 100})
    trainer = build_trainer(config_from_dict(data))
    trainer.train()
    entry = load_checkpoint(trainer.files.last_checkpoint)["code_prior"]
    assert entry["version"] == 2 and entry["source"] == "training data"
    loaded = load_codec_model(trainer.files.last_checkpoint)
    assert loaded.model.code_prior.digest == trainer.model.code_prior.digest
    assert loaded.model.code_prior.has_context(0)
