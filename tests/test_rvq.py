"""Residual VQ: encode/decode twins, straight-through gradients, per-stage commitment, dropout."""
import dataclasses
import math

import pytest
import torch

from codec.codebook import squared_distances
from codec.rvq import ResidualVQ


def trained_rvq(n_q=4, size=16, dim=8, steps=3, seed=0, **kw):
    torch.manual_seed(seed)
    rvq = ResidualVQ(dim, n_q, size, **kw)
    for _ in range(steps):
        rvq(torch.randn(4, dim, 30))
    return rvq.eval()


def test_decode_of_encode_equals_eval_forward_exactly():
    rvq = trained_rvq()
    x = torch.randn(3, 8, 25)
    codes = rvq.encode(x)
    out = rvq(x)
    assert codes.shape == (3, 4, 25) and codes.dtype == torch.int64
    assert torch.equal(codes, out.codes)
    assert torch.equal(rvq.decode(codes), out.latent)


def test_each_stage_picks_the_nearest_code_of_its_residual():
    rvq = trained_rvq()
    x = torch.randn(2, 8, 10)
    codes = rvq.encode(x)
    residual = x.double()
    for i, layer in enumerate(rvq.layers):
        rows = residual.transpose(1, 2).reshape(-1, 8)
        expected = squared_distances(rows, layer.codebook.embed.double()).argmin(dim=1)
        assert torch.equal(codes[:, i].reshape(-1), expected)
        residual = residual - layer.codebook.embed.double()[codes[:, i]].transpose(1, 2)


def test_fewer_codebooks_decode_a_prefix_and_lower_the_rate():
    rvq = trained_rvq()
    x = torch.randn(2, 8, 10)
    full = rvq.encode(x)
    assert torch.equal(rvq.encode(x, n_q=2), full[:, :2])
    assert rvq(x, n_q=2).bits_per_frame.item() == pytest.approx(2 * math.log2(16))
    with pytest.raises(ValueError, match="n_q must be between 1 and 4"):
        rvq.encode(x, n_q=5)


def test_straight_through_gradient_is_the_identity():
    rvq = trained_rvq().train()
    x = torch.randn(2, 8, 10, requires_grad=True)
    w = torch.randn(2, 8, 10)
    (rvq(x).latent * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_every_stage_commitment_reaches_the_input():
    """Stage k's commitment = C(n_q=k) - C(n_q=k-1); each must have a gradient w.r.t. x."""
    rvq = trained_rvq(n_q=4)   # eval mode: no dropout, no codebook updates, same residuals each call
    x = torch.randn(2, 8, 10, requires_grad=True)
    previous = torch.zeros(())
    for k in range(1, 5):
        total = rvq(x, n_q=k).losses["commitment"]
        (grad,) = torch.autograd.grad(total - previous, x)
        assert grad.abs().sum() > 0, f"stage {k} commitment does not reach the encoder"
        previous = total.detach()


def test_batch_dropout_draws_every_count_and_reports_its_rate():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, 4, 8, dropout=True)
    seen = set()
    for _ in range(60):
        out = rvq(torch.randn(2, 4, 12))
        n = out.codes.shape[1]
        seen.add(n)
        assert out.bits_per_frame.item() == pytest.approx(n * 3)
    assert seen == {1, 2, 3, 4}


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5])
def test_dropout_p_uses_every_codebook_on_the_rest_of_the_batches(p, per_sample):
    torch.manual_seed(4)
    n_q, draws = 4, 4000
    rvq = ResidualVQ(4, n_q, 8, dropout=True, dropout_per_sample=per_sample, dropout_p=p)
    batch = 8 if per_sample else 1

    def draw():
        active = rvq._active_per_sample(batch, n_q, torch.device("cpu"))
        return torch.full((batch,), n_q) if active is None else active   # None: no dropout, all n_q
    counts = torch.cat([draw() for _ in range(draws // batch)])
    share = torch.bincount(counts, minlength=n_q + 1)[1:].double() / counts.numel()
    expected = torch.full((n_q,), p / n_q, dtype=torch.float64)
    expected[-1] += 1 - p          # the undropped batches use all n_q
    torch.testing.assert_close(share, expected, rtol=0, atol=0.03)


@pytest.mark.parametrize("per_sample", [False, True])
def test_dropout_p_of_one_keeps_the_uniform_draw_stream(per_sample):
    """Runs started before dropout_p existed resume with the same draws."""
    rvq = ResidualVQ(4, 4, 8, dropout=True, dropout_per_sample=per_sample, dropout_p=1.0)
    torch.manual_seed(5)
    new = rvq._active_per_sample(3, 4, torch.device("cpu"))
    torch.manual_seed(5)
    old = torch.randint(1, 5, (3,)) if per_sample else torch.randint(1, 5, (1,)).expand(3)
    assert torch.equal(new, old)


@pytest.mark.parametrize("p", [-0.1, 1.5, True, "half"])
@pytest.mark.parametrize("name", ["quantizer_dropout_p", "quantizer_bypass_p"])
def test_bad_share_is_an_error(p, name):
    from codec.model import CodecConfig
    with pytest.raises(ValueError, match=name):
        CodecConfig(**{name: p})


@pytest.mark.parametrize("factorised", [0, 2])
def test_bypass_hands_the_decoder_the_latent_of_the_drawn_samples(factorised):
    torch.manual_seed(2)
    plain = ResidualVQ(4, 3, 8, dropout=False, codebook_dim=factorised)
    plain(torch.randn(64, 4, 12))                                   # k-means init
    bypassing = ResidualVQ(4, 3, 8, dropout=False, codebook_dim=factorised, bypass_p=0.5)
    bypassing.load_state_dict(plain.state_dict())
    x = torch.randn(64, 4, 12, requires_grad=True)
    torch.manual_seed(3)
    expected = plain(x)
    torch.manual_seed(3)
    got = bypassing(x)
    torch.manual_seed(3)                    # the codebooks' own draws come first (none here), then this
    drawn = torch.rand(64) < 0.5
    assert 16 < int(drawn.sum()) < 48
    torch.testing.assert_close(got.latent[drawn], x[drawn].detach())      # bypassed: the latent itself
    torch.testing.assert_close(got.latent[~drawn], expected.latent[~drawn])
    assert torch.equal(got.codes, expected.codes)                   # every sample is still quantised
    torch.testing.assert_close(got.losses["commitment"], expected.losses["commitment"])
    (grad,) = torch.autograd.grad(got.latent[drawn].sum(), x)
    assert torch.equal(grad[drawn], torch.ones_like(grad[drawn])) and grad[~drawn].abs().sum() == 0


def test_bypass_is_training_only_and_off_keeps_the_random_stream():
    torch.manual_seed(2)
    rvq = ResidualVQ(4, 3, 8, dropout=False, bypass_p=1.0)
    x = torch.randn(6, 4, 12)
    assert torch.equal(rvq(x).latent, x)                            # p = 1: every sample bypassed
    assert all(bool(layer.codebook.initialized) for layer in rvq.layers)
    rvq.eval()
    assert torch.equal(rvq(x).latent, rvq.decode(rvq.encode(x)))    # eval never bypasses
    rvq.train()                             # no dropout draw; codebooks initialised: no k-means draws
    for layer in rvq.layers:
        layer.codebook.cfg = dataclasses.replace(layer.codebook.cfg, dead_threshold=0.0)  # no reset draws
    for p, draws in ((0.0, False), (0.5, True)):
        rvq.bypass_p = p
        state = torch.get_rng_state()
        rvq(x)
        assert (not torch.equal(torch.get_rng_state(), state)) == draws, p   # off: nothing drawn


def test_per_sample_dropout_masks_later_stages_per_sample():
    torch.manual_seed(1)
    rvq = ResidualVQ(4, 4, 8, dropout=True, dropout_per_sample=True)
    rvq(torch.randn(16, 4, 12))             # k-means init
    x = torch.randn(16, 4, 12)
    torch.manual_seed(7)
    active = torch.randint(1, 5, (16,))
    torch.manual_seed(7)
    books = [layer.codebook.embed.clone() for layer in rvq.layers]     # the step's codebooks, before it learns
    out = rvq(x)
    assert out.bits_per_frame.item() == pytest.approx(active.float().mean().item() * 3)
    for b in range(16):   # sample b's latent is the sum of its first active[b] stages, taken from the codes
        expected = sum(books[i][out.codes[b, i]].t()[None] for i in range(int(active[b])))
        torch.testing.assert_close(out.latent[b:b + 1], expected, rtol=0, atol=1e-5)


def test_training_learns_codebooks_that_reduce_error_stage_by_stage():
    torch.manual_seed(2)
    rvq = ResidualVQ(8, 4, 32, dropout=False)
    data = torch.randn(8, 8, 40)
    for _ in range(20):
        rvq(data)
    rvq.eval()
    errors = [(rvq.decode(rvq.encode(data, n_q=k)) - data).pow(2).mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * data.pow(2).mean().item()


def test_training_output_uses_the_codebook_the_codes_were_assigned_with():
    """The step's EMA update and dead-code resets must not leak into this step's output."""
    from codec.codebook import CodebookConfig
    from codec.vq import VectorQuantizer
    torch.manual_seed(3)
    vq = VectorQuantizer(4, 64, CodebookConfig(dead_threshold=2.0))
    vq(torch.randn(2, 4, 50))                                   # k-means init
    before = vq.codebook.embed.clone()
    out = vq(torch.randn(2, 4, 50))
    assert out.resets > 0                                       # the codebook did change in this step
    assert not torch.equal(vq.codebook.embed, before)
    assert torch.equal(out.quantized, before[out.codes].transpose(1, 2))


# ----------------------------------------------------------------------------- factorised codes
def test_factorised_decode_of_encode_equals_eval_forward_exactly():
    rvq = trained_rvq(codebook_dim=3)
    assert rvq.layers[0].codebook.embed.shape == (16, 3)
    x = torch.randn(3, 8, 25)
    codes = rvq.encode(x)
    out = rvq(x)
    assert torch.equal(codes, out.codes)
    assert torch.equal(rvq.decode(codes), out.latent)


def test_factorised_stages_look_up_the_projected_residual_and_project_the_code_back():
    """Slow reference: per stage, nearest code of W_in r + b_in in float64, then W_out e + b_out."""
    rvq = trained_rvq(codebook_dim=3)
    x = torch.randn(2, 8, 10)
    codes, latent = rvq.encode(x), rvq.decode(rvq.encode(x))
    residual, total = x.double(), torch.zeros_like(x, dtype=torch.float64)
    for i, layer in enumerate(rvq.layers):
        w_in, b_in = layer.project_in.weight.double()[:, :, 0], layer.project_in.bias.double()
        w_out, b_out = layer.project_out.weight.double()[:, :, 0], layer.project_out.bias.double()
        book = layer.codebook.embed.double()
        for b in range(2):
            for f in range(10):
                z = w_in @ residual[b, :, f] + b_in
                expected = int(((book - z) ** 2).sum(1).argmin())
                assert int(codes[b, i, f]) == expected
                q = w_out @ book[expected] + b_out
                residual[b, :, f] -= q
                total[b, :, f] += q
    torch.testing.assert_close(latent.double(), total, rtol=0, atol=1e-5)


def test_factorised_training_trains_both_projections_and_reaches_the_input():
    rvq = trained_rvq(codebook_dim=3, dropout=False).train()
    x = torch.randn(2, 8, 10, requires_grad=True)
    rvq(x).latent.pow(2).sum().backward()               # a decoder-like loss, no commitment term
    assert x.grad.abs().sum() > 0
    for layer in rvq.layers:
        assert layer.project_in.weight.grad.abs().sum() > 0, "project_in gets no decoder gradient"
        assert layer.project_out.weight.grad.abs().sum() > 0


def test_factorised_training_reduces_error_stage_by_stage():
    torch.manual_seed(2)
    rvq = ResidualVQ(8, 4, 32, dropout=False, codebook_dim=4)
    data = torch.randn(8, 8, 40)
    opt = torch.optim.Adam(rvq.parameters(), lr=1e-2)
    for _ in range(60):
        out = rvq(data)
        loss = (out.latent - data).pow(2).mean() + out.losses["commitment"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    rvq.eval()
    errors = [(rvq.decode(rvq.encode(data, n_q=k)) - data).pow(2).mean().item() for k in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.6 * data.pow(2).mean().item()


def test_negative_codebook_dim_is_refused():
    from codec.model import CodecConfig
    with pytest.raises(ValueError, match="codebook_dim must be >= 0"):
        CodecConfig(codebook_dim=-1)
