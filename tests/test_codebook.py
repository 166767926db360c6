"""Codebook invariants: distances, EMA bookkeeping, k-means initialisation and dead-code reset."""
import pytest
import torch

from codec.codebook import (CodebookConfig, EuclideanCodebook, kmeans, laplace_smoothing, nearest,
                            perplexity, squared_distances)


def clustered(n_clusters=16, per_cluster=64, dim=8, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    points = centres.repeat_interleave(per_cluster, 0) + spread * torch.randn(n_clusters * per_cluster, dim, generator=g)
    return points[torch.randperm(points.shape[0], generator=g)], centres


def distortion(x, embed):
    return squared_distances(x, embed).min(dim=1).values.mean()


def test_squared_distances_match_slow_reference():
    x, e = torch.randn(37, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    slow = torch.tensor([[float(((xi - ek) ** 2).sum()) for ek in e] for xi in x], dtype=torch.float64)
    torch.testing.assert_close(squared_distances(x, e), slow)
    assert torch.equal(nearest(x, e), slow.argmin(dim=1))


def test_laplace_smoothing_keeps_total_and_makes_every_count_positive():
    counts = torch.tensor([0.0, 0.0, 5.0, 95.0])
    smoothed = laplace_smoothing(counts, 1e-5)
    assert torch.all(smoothed > 0)
    torch.testing.assert_close(smoothed.sum(), counts.sum())
    torch.testing.assert_close(smoothed, (counts + 1e-5) / (100 + 4e-5) * 100)


def test_perplexity_of_uniform_and_one_hot_usage():
    assert perplexity(torch.ones(64)).item() == pytest.approx(64.0, rel=1e-5)
    assert perplexity(torch.tensor([0.0, 7.0, 0.0])).item() == pytest.approx(1.0, rel=1e-5)


def test_kmeans_init_lowers_distortion_versus_random_init():
    torch.manual_seed(0)
    x, _ = clustered()
    cb = EuclideanCodebook(8, 16, CodebookConfig(kmeans_iters=50))
    random_from_data = x[torch.randperm(x.shape[0])[:16]]
    cb.init_kmeans(x)
    assert distortion(x, cb.embed) < 0.5 * distortion(x, random_from_data)
    assert distortion(x, cb.embed) < 0.5 * distortion(x, torch.randn(16, 8))


def test_kmeans_init_state_is_consistent():
    torch.manual_seed(1)
    x, _ = clustered(per_cluster=10)
    cb = EuclideanCodebook(8, 32)
    cb.init_kmeans(x)
    assert bool(cb.initialized)
    torch.testing.assert_close(cb.cluster_size.sum(), torch.tensor(float(x.shape[0])))
    torch.testing.assert_close(cb.embed, cb.embed_sum / laplace_smoothing(cb.cluster_size, cb.cfg.eps)[:, None])


def test_kmeans_with_fewer_vectors_than_codes_samples_with_replacement():
    torch.manual_seed(2)
    x = torch.randn(5, 4)
    centroids, counts = kmeans(x, 16, 10)
    assert centroids.shape == (16, 4) and torch.isfinite(centroids).all()
    assert counts.sum() == 5
    # every centroid is one of the data points (or a mean of identical ones)
    assert torch.cdist(centroids, x).min(dim=1).values.max() < 1e-5


def reference_ema(x_steps, embed0, counts0, sums0, decay, eps):
    """Slow float64 EMA: per-vector loops for assignment and statistics."""
    counts, sums, embed = counts0.double().clone(), sums0.double().clone(), embed0.double().clone()
    for x in x_steps:
        x = x.double()
        new_counts, new_sums = torch.zeros_like(counts), torch.zeros_like(sums)
        for v in x:
            k = int(min(range(embed.shape[0]), key=lambda j: float(((v - embed[j]) ** 2).sum())))
            new_counts[k] += 1
            new_sums[k] += v
        counts = decay * counts + (1 - decay) * new_counts
        sums = decay * sums + (1 - decay) * new_sums
        total = counts.sum()
        embed = sums / ((counts + eps) / (total + counts.numel() * eps) * total)[:, None]
    return counts, sums, embed


def test_ema_steps_match_slow_reference_and_keep_the_invariant():
    torch.manual_seed(3)
    x0, _ = clustered(n_clusters=6, per_cluster=20, dim=4)
    cb = EuclideanCodebook(4, 6, CodebookConfig(decay=0.9, dead_threshold=0.0))
    cb.init_kmeans(x0)
    state0 = (cb.embed.clone(), cb.cluster_size.clone(), cb.embed_sum.clone())
    steps = [x0[torch.randperm(x0.shape[0])[:50]] + 0.01 * torch.randn(50, 4) for _ in range(5)]
    for x in steps:
        assert cb.update(x, cb.encode(x)) == 0
        # the invariant, after every step: codebook = EMA sums / smoothed EMA counts
        torch.testing.assert_close(cb.embed, cb.embed_sum / laplace_smoothing(cb.cluster_size, cb.cfg.eps)[:, None])
    counts, sums, embed = reference_ema(steps, *state0, decay=0.9, eps=cb.cfg.eps)
    torch.testing.assert_close(cb.cluster_size.double(), counts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cb.embed_sum.double(), sums, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cb.embed.double(), embed, rtol=1e-4, atol=1e-5)


def test_dead_code_is_replaced_by_a_batch_vector_that_survives_the_step():
    torch.manual_seed(4)
    x, _ = clustered(n_clusters=8, per_cluster=32, dim=4)
    cb = EuclideanCodebook(4, 8, CodebookConfig(dead_threshold=2.0))
    cb.init_kmeans(x)
    far = torch.full((4,), 1e3)                 # a code nothing is assigned to: dies at the first step
    cb.embed_sum[3] = far * laplace_smoothing(cb.cluster_size, cb.cfg.eps)[3]
    cb.cluster_size[3] = 0.5
    cb._refresh_embed()
    batch = x[:100]
    resets = cb.update(batch, cb.encode(batch))
    assert resets == 1
    replaced = cb.embed[3]
    assert not torch.allclose(replaced, far)
    assert (batch == replaced).all(dim=1).any(), "the reset code must equal a vector of the batch"
    assert cb.cluster_size[3] == cb.cfg.dead_threshold
    torch.testing.assert_close(cb.embed, cb.embed_sum / laplace_smoothing(cb.cluster_size, cb.cfg.eps)[:, None])
    # it is live: the vector it copied is now assigned to it or to an equal code. The distance is
    # taken directly: the expanded form that encoding ranks codes by rounds to about
    # float32 eps * |v|^2, which is over 1e-6 on some CPUs' matmul kernels.
    chosen = cb.embed[cb.encode(replaced[None])[0]]
    assert (chosen - replaced).pow(2).sum() < 1e-6


def test_live_codes_are_not_reset():
    torch.manual_seed(5)
    x, _ = clustered(n_clusters=4, per_cluster=50, dim=4)
    cb = EuclideanCodebook(4, 4, CodebookConfig(dead_threshold=1.0))
    cb.init_kmeans(x)
    assert cb.update(x, cb.encode(x)) == 0
    assert cb.health()["dead_codes"] == 0
    assert cb.health()["perplexity"] == pytest.approx(4.0, rel=0.05)
