"""The composed codec: lengths, causality, encode/decode twins, batching, rates, VAE KL."""
import math

import pytest
import torch

from codec import Codec, CodecConfig
from codec.bottleneck import gaussian_kl
from codec.layers import ELU
from tests.helpers import tiny_config, tiny_model

LENGTHS = [1, 2, 319, 320, 321, 641, 16000 + 123]


def warmed(model, length=3200, seed=0):
    """Run one training step so that codebooks are k-means initialised, then switch to eval."""
    torch.manual_seed(seed)
    model.train()(torch.randn(2, 1, length))
    return model.eval()


def test_public_description_of_the_default_model():
    model = Codec(CodecConfig())
    assert (model.sample_rate, model.hop_length, model.frame_rate) == (16000, 320, 50.0)
    assert (model.n_q, model.codebook_size) == (8, 1024)
    assert model.bitrate(8) == 8 * 10 * 50 and model.bitrate(1) == 500
    assert model.bitrate() == model.bitrate(8)


@pytest.mark.parametrize("bottleneck", ["ae", "vae", "vq", "rvq"])
@pytest.mark.parametrize("causal", [False, True])
def test_any_input_length_comes_back_exactly(bottleneck, causal):
    model = warmed(tiny_model(bottleneck, causal=causal))
    for length in LENGTHS:
        x = torch.randn(1, 1, length)
        codes = model.encode(x)
        assert codes.shape[-1] == math.ceil(length / 320)
        assert model.decode(codes).shape == (1, 1, length)
        assert model(x).audio.shape == (1, 1, length)
        assert model.decode(codes, length=5).shape == (1, 1, 5)
    bare = codes.clone()   # without the recorded length: whole frames
    assert model.decode(bare).shape == (1, 1, codes.shape[-1] * 320)


@pytest.mark.parametrize("bottleneck", ["ae", "vae", "vq", "rvq"])
def test_decode_of_encode_equals_the_eval_forward_pass(bottleneck):
    model = warmed(tiny_model(bottleneck))
    x = torch.randn(2, 1, 3000)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(model.decode(model.encode(x)), out.audio)


def test_batched_equals_item_by_item():
    model = warmed(tiny_model("rvq"))
    x = torch.randn(3, 1, 2000)
    codes = model.encode(x)
    for b in range(3):
        single = model.encode(x[b:b + 1])
        assert torch.equal(single, codes[b:b + 1])
        torch.testing.assert_close(model.decode(single), model.decode(codes)[b:b + 1], rtol=1e-5, atol=1e-6)


def test_causal_model_does_not_look_ahead():
    """Frame f sees input before (f+1)*hop; output sample t sees only frames <= t // hop.
    So output before a frame boundary t0 is unchanged when input from t0 on changes.
    ("Unchanged" up to float rounding: oneDNN's convolution kernels may round a sample
    differently when its neighbours differ; a look-ahead would change it by orders more.)"""
    hop, t0 = 320, 3 * 320
    model = warmed(tiny_model("ae", causal=True))
    x = torch.randn(1, 1, 8 * hop)
    x2 = x.clone()
    x2[..., t0:] = torch.randn(1, 1, 8 * hop - t0)
    z, z2 = model.encode(x), model.encode(x2)
    assert same(z[..., :t0 // hop], z2[..., :t0 // hop]) and not same(z, z2)
    y, y2 = model.decode(z), model.decode(z2)
    assert same(y[..., :t0], y2[..., :t0]) and not same(y[..., t0:], y2[..., t0:])
    # and the decoder alone: changing frame f changes nothing before sample f * hop
    z3 = z.clone()
    z3[..., 5] += 1.0
    y3 = model.decode(z3)
    assert same(y[..., :5 * hop], y3[..., :5 * hop]) and not same(y, y3)


def same(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol


def test_non_causal_model_does_look_ahead():
    """Sanity check of the test above: the same perturbation reaches back in a non-causal model."""
    model = warmed(tiny_model("ae", causal=False))
    x = torch.randn(1, 1, 2560)
    x2 = x.clone()
    x2[..., 960:] += 1.0
    assert not same(model.decode(model.encode(x))[..., :960], model.decode(model.encode(x2))[..., :960])


def test_gradients_reach_the_encoder_through_the_quantizer():
    model = tiny_model("rvq", quantizer_dropout=False).train()
    out = model(torch.randn(2, 1, 1600))
    out.audio.pow(2).mean().backward()
    first_conv = model.encoder.net[0].conv.parametrizations.weight.original1
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_vae_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, logvar = torch.randn(1, 6, 4, dtype=torch.float64), torch.randn(1, 6, 4, dtype=torch.float64) * 0.5
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(200_000, 6, 4, dtype=torch.float64)
    log_q = (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)
    mc = (log_q - log_p).mean(0)                                  # (F,)
    torch.testing.assert_close(gaussian_kl(mu, logvar).sum(1)[0], mc, rtol=0.02, atol=0.02)


def test_vae_rate_is_kl_over_ln2_and_sampling_only_in_training():
    model = tiny_model("vae")
    x = torch.randn(2, 1, 1600)
    model.train()
    out = model(x)
    assert out.bits_per_frame.item() == pytest.approx(out.losses["kl"].item() / math.log(2))
    assert not torch.equal(model(x).audio, out.audio)              # z = mu + sigma * eps
    model.eval()
    assert torch.equal(model(x).audio, model(x).audio)             # z = mu
    with pytest.raises(ValueError, match="no nominal bitrate"):
        model.bitrate()


def test_vae_free_bits_forgive_dimensions_under_the_floor_but_not_the_rate():
    torch.manual_seed(0)
    plain, free = tiny_model("vae"), tiny_model("vae", vae_free_bits=0.5)
    free.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 1600)
    a, b = plain.eval()(x), free.eval()(x)
    assert torch.equal(a.bits_per_frame, b.bits_per_frame)                 # the rate is the true KL
    h = plain.encoder(plain.pad_to_frames(x)[0])
    per_dim = gaussian_kl(*plain.bottleneck.posterior(h)).mean(dim=(0, 2))
    torch.testing.assert_close(b.losses["kl"], per_dim.clamp(min=0.5).sum())
    assert b.losses["kl"] >= a.losses["kl"]


def test_ae_rate_is_the_stored_float_width():
    assert tiny_model("ae").bitrate() == 32 * 8 * 50
    half = warmed(tiny_model("ae", ae_float_bits=16))
    latent = half.encode(torch.randn(1, 1, 640))
    assert torch.equal(latent, latent.half().float()) and half.bitrate() == 16 * 8 * 50


def test_fast_elu_equals_torch_elu_with_and_without_autograd():
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ELU()(x), torch.nn.functional.elu(x))
    with torch.no_grad():
        torch.testing.assert_close(ELU()(x), torch.nn.functional.elu(x))
    assert torch.autograd.gradcheck(ELU(), (torch.randn(20, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("bad, message", [
    (torch.randn(1, 2, 100), r"expected audio of shape \(batch, 1, samples\)"),
    (torch.randn(100), r"expected audio of shape"),
    (torch.randn(1, 1, 0), "zero-length audio"),
])
def test_bad_audio_is_a_clear_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model().eval().encode(bad)


def test_out_of_range_codes_are_refused():
    model = warmed(tiny_model())
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        model.decode(torch.full((1, 3, 4), 16))
    with pytest.raises(TypeError, match="integer tensor"):
        model.decode(torch.zeros(1, 3, 4))


@pytest.mark.parametrize("bottleneck", ["vq", "rvq"])
def test_factorised_codes_round_trip_through_a_model_file(bottleneck, tmp_path):
    import codec
    model = warmed(tiny_model(bottleneck, codebook_dim=3))
    assert model.bottleneck.layers[0].codebook.embed.shape == (16, 3)
    x = torch.randn(2, 1, 3000)
    with torch.no_grad():
        out = model(x)
    codes = model.encode(x)
    assert torch.equal(model.decode(codes), out.audio)
    loaded = codec.load(model.save(tmp_path / "m", inference_only=True))
    assert loaded.config.codebook_dim == 3
    assert torch.equal(loaded.encode(x), codes) and torch.equal(loaded.decode(codes), out.audio)


def test_factorised_gradients_reach_the_encoder():
    model = tiny_model("rvq", quantizer_dropout=False, codebook_dim=3).train()
    model(torch.randn(2, 1, 1600)).audio.pow(2).mean().backward()
    first_conv = model.encoder.net[0].conv.parametrizations.weight.original1
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


# ---------------------------------------------------------------- frame-rate encoder and decoder
ISTFT = {"decoder": "istft", "istft": {"dim": 8, "hidden": 16, "depth": 2, "kernel_size": 3}}
FRAME = {"encoder": "frame", "frame_encoder": {"dim": 8, "hidden": 16, "depth": 2, "kernel_size": 3}}
PAIRS = {"seanet/istft": ISTFT, "frame/seanet": FRAME, "frame/istft": {**FRAME, **ISTFT}}


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("bottleneck", ["ae", "vae", "vq", "rvq"])
def test_every_bottleneck_works_with_every_encoder_and_decoder(bottleneck, pair, tmp_path):
    import codec
    from codec.convnext import FrameEncoder
    from codec.istft import ISTFTDecoder
    from codec.seanet import SEANetDecoder, SEANetEncoder
    model = warmed(tiny_model(bottleneck, **PAIRS[pair]))
    encoder, decoder = pair.split("/")
    assert isinstance(model.encoder, FrameEncoder if encoder == "frame" else SEANetEncoder)
    assert isinstance(model.decoder, ISTFTDecoder if decoder == "istft" else SEANetDecoder)
    for length in LENGTHS:
        x = torch.randn(1, 1, length)
        codes = model.encode(x)
        assert model.decode(codes).shape == (1, 1, length) and model(x).audio.shape == (1, 1, length)
    x = torch.randn(2, 1, 3000)
    with torch.no_grad():
        out = model(x)
    codes = model.encode(x)
    assert torch.equal(model.decode(codes), out.audio) and out.audio.abs().max() > 0
    loaded = codec.load(model.save(tmp_path / "m", inference_only=True))
    assert loaded.config == model.config
    assert torch.equal(loaded.encode(x), codes) and torch.equal(loaded.decode(codes), out.audio)


@pytest.mark.parametrize("pair", PAIRS)
def test_gradients_reach_the_first_layer_of_every_encoder(pair):
    model = tiny_model("rvq", quantizer_dropout=False, **PAIRS[pair]).train()
    model(torch.randn(2, 1, 1600)).audio.pow(2).mean().backward()
    first_conv = model.encoder.net[0].conv.parametrizations.weight.original1
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


@pytest.mark.parametrize("kw, message", [
    ({"decoder": "hifigan"}, r"decoder must be one of \('seanet', 'istft'\), got 'hifigan'"),
    ({"decoder": "istft", "causal": True}, "the istft decoder is not causal"),
    ({"decoder": "istft", "istft": {"dim": -1}}, "istft.dim must be a positive integer"),
    ({"encoder": "wav2vec"}, r"encoder must be one of \('seanet', 'frame'\), got 'wav2vec'"),
    ({"encoder": "frame", "causal": True}, "the frame encoder is not causal"),
    ({"encoder": "frame", "frame_encoder": {"window_factor": 0}}, "frame_encoder.window_factor must be a positive"),
    ({"encoder": "frame", "frame_encoder": {"kernel_size": 6}}, "frame_encoder.kernel_size must be odd"),
])
def test_bad_encoder_and_decoder_choices_are_a_value_error(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kw)


def test_a_seanet_config_without_decoder_fields_still_loads_as_seanet():
    from codec.model import config_from_dict
    from codec.seanet import SEANetDecoder
    cfg = config_from_dict(CodecConfig, {"bottleneck": "rvq", "n_q": 2, "codebook_size": 8})
    assert cfg.decoder == "seanet" and isinstance(Codec(cfg).decoder, SEANetDecoder)
    assert cfg.encoder == "seanet"
