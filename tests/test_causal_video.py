"""CausalVideoVQ: causality, shapes per compression pair, images and videos in one model,
2D -> 3D inflation from Taming, training through the trainer (and an exact resume), every
quantizer of the package, and the codec round trip."""
import copy
import logging

import numpy as np
import pytest
import torch

from codec.codec import compress, decode_indices, decompress, load_codec_model
from core.checkpoint import save_checkpoint
from core.config_schema import ConfigError
from models.architecture import analyze_model_architecture, rate_summary
from models.builders import config_from_dict, create_model, load_config
from models.causal_video.adapter import CausalVideoAdapter
from models.causal_video.causal_conv import CausalConv3d
from models.causal_video.inflation import inflate_kernel
from models.loaders import model_from_checkpoint
from models.quantizers import FSQ, NAMES
from models.taming.adapter import TamingVQGANAdapter
from models.taming.checkpoint_loading import load_upstream_weights
from tests.codec_helpers import clip
from tests.helpers import real_frames, tiny_config, train_steps, write_config
from tests.test_codec import expected_output
from train.train_custom_videos import build_trainer

LEVELS = [5, 5, 5]
TINY_ARGS = {"ch": 2, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": False,
             "quantizer": {"type": "fsq", "levels": LEVELS}}


def causal_config(sequence_length=5, resolution=16, use_images=False, **model_args) -> dict:
    return {"model_type": "CausalVideoVQ", "use_images": use_images,
            "model_args": {**TINY_ARGS, **model_args},
            "data_args": {"sequence_length": sequence_length, "resolution": resolution, "batch_size": 2}}


def causal_adapter(seed=0, **kwargs) -> CausalVideoAdapter:
    torch.manual_seed(seed)
    return create_model(config_from_dict(causal_config(**kwargs))).eval()


def random_clips(batch, frames, size, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


def test_registered_under_both_names_and_tiny():
    for name in ("CausalVideoVQ", "causal_video"):
        config = config_from_dict({**causal_config(), "model_type": name})
        assert isinstance(create_model(config), CausalVideoAdapter)
    adapter = causal_adapter()
    assert sum(p.numel() for p in adapter.parameters()) < 20000
    assert adapter.vocab_sizes == [125] and adapter.code_factors == [LEVELS]
    assert (adapter.spatial_factor, adapter.temporal_factor, adapter.frames_per_clip) == (8, 4, 5)


def test_causal_kernel_sees_only_the_past():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, kernel_size=3, stride=(2, 1, 1))
    x = torch.randn(1, 2, 9, 5, 5)
    y = conv(x)
    assert y.shape == (1, 3, 5, 5, 5)  # 1 + 2k frames -> 1 + k
    changed = x.clone()
    changed[:, :, 5:] += 1.0  # frames after 4 move: outputs 0..2 (frames <= 4) must not
    torch.testing.assert_close(conv(changed)[:, :, :3], y[:, :, :3], rtol=0, atol=0)
    assert not torch.allclose(conv(changed)[:, :, 3], y[:, :, 3])


@pytest.mark.parametrize("temporal", [2, 4])
def test_latents_of_a_prefix_equal_the_prefix_of_the_latents(temporal):
    """Encoder and decoder are causal: the first 1 + j*t frames give the first 1 + j latent frames."""
    adapter = causal_adapter(temporal_compression=temporal, attention=True)
    model = adapter.model
    clips = random_clips(2, 1 + 3 * temporal, 16)
    with torch.no_grad():
        whole = model.encode_latents(clips)
        decoded = model.decode_latents(whole)
        assert whole.shape[2] == 4 and decoded.shape[2] == clips.shape[2]
        for j in range(3):
            prefix = 1 + j * temporal
            torch.testing.assert_close(model.encode_latents(clips[:, :, :prefix]), whole[:, :, :1 + j],
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.decode_latents(whole[:, :, :1 + j]), decoded[:, :, :prefix],
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial", [4, 8, 16])
@pytest.mark.parametrize("temporal", [1, 2, 4, 8])
def test_shapes_for_every_compression_pair(spatial, temporal):
    if temporal > spatial:
        pytest.skip("time is halved only at the spatial downsamplings")
    ch_mult = {4: [1, 2, 2], 8: [1, 1, 2, 2], 16: [1, 1, 1, 2, 2]}[spatial]
    size = 2 * spatial
    adapter = causal_adapter(spatial_compression=spatial, temporal_compression=temporal, ch_mult=ch_mult,
                             sequence_length=1 + temporal, resolution=size)
    for frames in (1, 1 + temporal, 2 + temporal):  # an image, one step, and a length to pad
        clips = random_clips(1, frames, size)
        with torch.no_grad():
            recon, result = adapter.model(clips)
        indices = result.indices
        latent_frames = 1 + -(-(frames - 1) // temporal)
        assert indices.shape == (1, latent_frames, 2, 2)
        assert recon.shape == clips.shape
        assert int(indices.min()) >= 0 and int(indices.max()) < adapter.vocab_sizes[0]


def test_odd_clip_lengths_are_padded_with_the_last_frame_and_trimmed():
    adapter = causal_adapter(temporal_compression=4)
    clips = random_clips(1, 7, 16)
    padded = torch.cat([clips, clips[:, :, -1:].repeat(1, 1, 2, 1, 1)], dim=2)  # 7 -> 9 = 1 + 2*4
    with torch.no_grad():
        recon, result = adapter.model(clips)
        recon_padded, result_padded = adapter.model(padded)
    assert recon.shape[2] == 7
    torch.testing.assert_close(recon, recon_padded[:, :, :7])
    assert torch.equal(result.indices, result_padded.indices)


def test_images_and_videos_through_one_model():
    """Same weights: image batches code as one-frame clips whose codes start the videos' codes."""
    video = causal_adapter(seed=3, sequence_length=5)
    images = create_model(config_from_dict(causal_config(use_images=True)))
    images.load_state_dict(video.state_dict())
    images.eval()
    assert images.frames_per_clip == 1
    frames = real_frames(10, 16)  # two clips of 5 frames
    with torch.no_grad():
        video_out = video(frames)
        image_out = images(frames[::5])  # the first frame of each clip, as two images
    assert video_out.recon.shape == frames.shape and image_out.recon.shape == (2, 3, 16, 16)
    assert video_out.indices.shape == (2, 2, 2, 2) and image_out.indices.shape == (2, 1, 2, 2)
    assert torch.equal(image_out.indices[:, 0], video_out.indices[:, 0])
    torch.testing.assert_close(image_out.recon, video_out.recon[::5], rtol=1e-5, atol=1e-5)


def test_encode_decode_match_forward_and_keep_state():
    adapter = causal_adapter()
    frames = real_frames(10, 16)
    before = copy.deepcopy(adapter.state_dict())
    adapter.train()
    indices = adapter.encode(frames)
    assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())
    adapter.eval()
    with torch.no_grad():
        out = adapter(frames)
        assert torch.equal(adapter.encode(frames), out.indices)
        torch.testing.assert_close(adapter.decode(out.indices), out.recon, rtol=1e-5, atol=1e-5)
    assert indices.shape == out.indices.shape


def test_trains_a_few_steps_and_loss_goes_down():
    adapter = causal_adapter(seed=1).train()
    frames = real_frames(10, 16)
    optimizer = torch.optim.Adam(adapter.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = adapter(frames)
        loss = torch.nn.functional.mse_loss(out.recon, frames) + out.vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model_args\.ch_mult = \[1, 2\]: expected 4 entries"):
        config_from_dict(causal_config(ch_mult=[1, 2]))
    with pytest.raises(ConfigError, match=r"model_args\.temporal_compression = 3"):
        config_from_dict(causal_config(temporal_compression=3))
    with pytest.raises(ConfigError, match=r"model_args\.temporal_compression = 8: expected at most spatial_comp"):
        config_from_dict(causal_config(spatial_compression=4, ch_mult=[1, 2, 2], temporal_compression=8))
    with pytest.raises(ConfigError, match=r"model_args\.quantizer"):
        config_from_dict(causal_config(quantizer="pq"))
    with pytest.raises(ConfigError, match=r"model_args\.quantizer\.levels"):
        config_from_dict(causal_config(quantizer={"type": "fsq", "levels": [1, 8]}))
    with pytest.raises(ConfigError, match=r"model_args\.quantizer = \['fsq', 'vq'\]: expected null or a string or an object"):
        config_from_dict(causal_config(quantizer=["fsq", "vq"]))
    with pytest.raises(ConfigError, match=r"data_args\.resolution = 20: expected .* multiples of .*spatial_comp"):
        config_from_dict(causal_config(resolution=20))
    with pytest.raises(ConfigError, match=r"train_args\.channels_last = true"):
        config_from_dict({**causal_config(), "train_args": {"channels_last": True}})


def test_fsq_is_the_default_with_levels_from_vocab_size():
    adapter = causal_adapter(quantizer=None)
    quantizer = adapter.model.quantize
    assert isinstance(quantizer, FSQ) and quantizer.levels == [8, 8, 8, 8] and adapter.vocab_sizes == [4096]
    assert adapter.model.quant_conv.out_channels == 4  # one channel per level: FSQ projects nothing
    assert causal_adapter(quantizer="fsq", vocab_size=125).code_factors == [[5, 5, 5]]


@pytest.mark.parametrize("name", NAMES)
def test_every_quantizer_of_the_package_trains_and_codes(name):
    adapter = causal_adapter(seed=2, quantizer=name, vocab_size=16).train()
    frames = real_frames(10, 16)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    history = train_steps(adapter, frames, steps=2)
    assert all(torch.isfinite(out.vq_loss) and torch.isfinite(out.recon).all() for out in history)
    assert any(not torch.equal(before[k], v) for k, v in adapter.state_dict().items())
    adapter.eval()
    indices = adapter.encode(frames)
    depth = adapter.code_depths[0]
    assert indices.shape == ((2, depth, 2, 2, 2) if depth else (2, 2, 2, 2))  # clips, [depth,] latent frames, h, w
    assert 0 <= int(indices.min()) and int(indices.max()) < adapter.vocab_sizes[0]
    assert adapter.decode(indices).shape == frames.shape


def test_architecture_report_shows_compression_and_bits_per_pixel(tmp_path):
    adapter = causal_adapter(sequence_length=9, temporal_compression=4)
    path = tmp_path / "architecture.txt"
    summary = analyze_model_architecture(adapter, (9, 3, 16, 16), str(path), logging.getLogger("test"))
    text = path.read_text()
    assert "Compression:          4x in time, 8x8 in space" in text
    assert summary["latent_shapes"] == [(1, 3, 2, 2)]
    expected_bpp = 3 * 2 * 2 * np.log2(125) / (9 * 16 * 16)  # 3 latent frames of 2x2 codes for 9 frames
    assert summary["bits_per_pixel"] == pytest.approx(expected_bpp)
    assert f"Bits per pixel:       {expected_bpp:.4f}" in text


# -- 2D -> 3D inflation ----------------------------------------------------------------------
TAMING_DDCONFIG = {"ch": 8, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [4],
                   "resolution": 32, "z_channels": 4}  # attention at 32 / 8 = 4 px: the lowest resolution
INFLATABLE = {"ch": 8, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "attention": True}


def taming_model(n_init=len(LEVELS), seed=0) -> TamingVQGANAdapter:
    torch.manual_seed(seed)
    config = config_from_dict({"model_type": "TamingVQGAN", "data_args": {"resolution": 32},
                               "model_args": {"vocab_size": 16, "n_init": n_init, "ddconfig": TAMING_DDCONFIG,
                                              "lossconfig": {"disc_num_layers": 2, "disc_ndf": 8}}})
    adapter = create_model(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong mapping would show
        for name, value in adapter.named_parameters():
            if "norm" in name or name.endswith("bias"):
                value.add_(0.1 * torch.randn_like(value))
    return adapter


def inflated_from(path, temporal=4, **args) -> CausalVideoAdapter:
    adapter = causal_adapter(seed=5, resolution=32, temporal_compression=temporal, **{**INFLATABLE, **args})
    load_upstream_weights(adapter, str(path))
    return adapter.eval()


def test_inflated_kernel_puts_the_2d_weights_on_the_newest_tap():
    weight = torch.randn(4, 3, 3, 3)
    inflated = inflate_kernel(weight, 3)
    assert inflated.shape == (4, 3, 3, 3, 3)
    assert torch.equal(inflated[:, :, 2], weight) and not inflated[:, :, :2].any()


@pytest.mark.parametrize("temporal", [1, 4])
def test_inflated_taming_model_reconstructs_images_as_the_2d_model(tmp_path, temporal):
    """Upstream-style file (``state_dict`` with ``loss.*`` keys): on images the 3D model is the 2D model.

    The quantizers differ (Taming's codebook vs FSQ), so the comparison runs each model's
    encoder (to the pre-quantization latents), then the same FSQ, then each decoder.
    """
    taming = taming_model()
    state = {**taming.state_dict(), "loss.discriminator.main.0.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "global_step": 7}, tmp_path / "last.ckpt")
    causal = inflated_from(tmp_path / "last.ckpt", temporal)
    images = real_frames(2, 32)
    clips = images.unsqueeze(2)  # (b, c, 1, h, w): images as one-frame clips
    with torch.no_grad():
        latents_2d = taming.model.quant_conv(taming.model.encoder(images))
        torch.testing.assert_close(causal.model.encode_latents(clips)[:, :, 0], latents_2d, rtol=1e-4, atol=1e-5)
        recon_2d = taming.model.decode(causal.model.quantize(latents_2d.unsqueeze(2)).quantized[:, :, 0])
        torch.testing.assert_close(causal.model(clips)[0][:, :, 0], recon_2d, rtol=1e-4, atol=1e-5)
        untouched = causal_adapter(seed=5, resolution=32, temporal_compression=temporal, **INFLATABLE)
        assert not torch.allclose(untouched.model(clips)[0][:, :, 0], recon_2d, atol=1e-2)


def test_vqvc_taming_checkpoint_inflates_and_keeps_fresh_quantizer_convs(tmp_path):
    """A vqvc TamingVQGAN checkpoint whose code width differs: encoder/decoder inflate, quant convs stay fresh."""
    taming = taming_model(n_init=6)
    path = save_checkpoint({"steps": 3, "state_dict": taming.state_dict(), "model_type": "TamingVQGAN",
                            "config": {"model_type": "TamingVQGAN"}}, str(tmp_path / "taming.pth.tar"))
    causal = causal_adapter(seed=5, resolution=32, **INFLATABLE)
    fresh = causal.model.quant_conv.weight.detach().clone()
    load_upstream_weights(causal, path)
    assert torch.equal(causal.model.quant_conv.weight, fresh)
    images = real_frames(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(causal.model.encoder(images.unsqueeze(2))[:, :, 0], taming.model.encoder(images),
                                   rtol=1e-4, atol=1e-5)
        z = torch.randn(2, 4, 4, 4)
        torch.testing.assert_close(causal.model.decoder(z.unsqueeze(2))[:, :, 0], taming.model.decoder(z),
                                   rtol=1e-4, atol=1e-5)


def test_inflation_refuses_another_architecture_naming_keys(tmp_path):
    torch.save({"state_dict": taming_model().state_dict()}, tmp_path / "last.ckpt")
    with pytest.raises(ConfigError, match=r"does not inflate .* unexpected \d+ \(encoder\.down\.3\.attn\.0"):
        inflated_from(tmp_path / "last.ckpt", attention=False)
    with pytest.raises(ConfigError, match=r"wrong shape .*encoder\.conv_in\.weight"):
        inflated_from(tmp_path / "last.ckpt", ch=16)


# -- the trainer and the codec ------------------------------------------------------------------
def test_trainer_trains_from_an_inflated_taming_checkpoint(tmp_path):
    torch.save({"state_dict": taming_model().state_dict()}, tmp_path / "last.ckpt")
    data = tiny_config(tmp_path, model_type="CausalVideoVQ", data_args={"sequence_length": 5, "resolution": 32},
                       train_args={"num_steps": 3, "save_interval": 3, "validation_interval": 3,
                                   "init_from": str(tmp_path / "last.ckpt")})
    data["model_args"] = {**TINY_ARGS, **INFLATABLE}
    trainer = build_trainer(config_from_dict(data, write_config(tmp_path, data)))
    inflated = trainer.model.model.encoder.conv_in.weight.detach()
    assert not inflated[:, :, :2].any()  # the past taps start at zero
    summary = trainer.train()
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert np.isfinite(summary["best"]["val/stats/psnr"])
    model, _, _ = model_from_checkpoint(summary["last_checkpoint"])
    assert isinstance(model, CausalVideoAdapter)
    assert model.model.encoder.conv_in.weight[:, :, :2].any()  # trained: the past taps moved


def test_trainer_resumes_exactly(tmp_path):
    def trainer(name, steps, **train_args):
        data = tiny_config(tmp_path, model_type="CausalVideoVQ", data_args={"sequence_length": 5, "resolution": 16},
                           train_args={"num_steps": steps, "save_interval": 2, "validation_interval": 100,
                                       "deterministic": True, "run_name": name, **train_args})
        data["model_args"] = TINY_ARGS
        return build_trainer(config_from_dict(data))

    straight = trainer("straight", 4)
    straight.train()
    trainer("halves", 2).train()
    rest = trainer("halves", 4, resume="auto")
    assert rest.start_step == 2
    rest.train()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, rest.model.state_dict()[key]), key


@pytest.mark.parametrize("use_images", [False, True])
def test_codec_round_trip(tmp_path, use_images):
    """compress/decompress give what the model itself gives on the codec's padded clips."""
    raw = causal_config(sequence_length=5, use_images=use_images)
    torch.manual_seed(0)
    model = create_model(config_from_dict(raw))
    path = save_checkpoint({"steps": 0, "state_dict": model.state_dict(), "config": raw,
                            "model_type": raw["model_type"]}, str(tmp_path / "causal.pth.tar"))
    codec = load_codec_model(path)
    frames = clip(7, 13, 19)  # 7 frames of an odd size
    data = compress(codec, frames, fps=25.0)
    header, indices = decode_indices(codec, data)
    decoded, _ = decompress(codec, data)
    assert decoded.shape == frames.shape
    assert header.frames_per_clip == codec.model.frames_per_clip == (1 if use_images else 5)
    want_indices, want_frames = expected_output(codec, frames)
    np.testing.assert_array_equal(indices[0], want_indices[0].reshape(indices[0].shape))
    np.testing.assert_array_equal(decoded, want_frames)


def test_shipped_configs():
    """The CPU config codes 9 frames of 64x64 at param.json's VqVae2 rate; the GPU one is 4x8x8 FSQ at 256x256."""
    cpu = load_config("configs/causal_video.json")
    summary = rate_summary(create_model(cpu), (9, 3, 64, 64))
    assert summary["latent_shapes"] == [(1, 3, 8, 8)] and summary["bits_per_pixel"] == pytest.approx(0.0625)
    gpu = load_config("configs/causal_video_gpu.json").model_args
    assert (gpu.temporal_compression, gpu.spatial_compression, gpu.quantizer.type) == (4, 8, "fsq")
    assert load_config("configs/causal_video_gpu.json").data_args.frame_size == (256, 256)
