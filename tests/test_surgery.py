import math

import pytest
import torch
import torch.nn.functional as F

from congrad.errors import ConfigError
from congrad.filtering import surgery
from congrad.filtering.surgery import (
    consensus,
    cosine_matrix,
    gradvac,
    gradvac_project,
    mean,
    pcgrad,
    pcgrad_project,
)


def walk(grads, seed, update):
    """Oracle: the documented walk written as plain loops, in float64, one vector at a time.

    For ℓ = 0..L−1, randperm(L−1) from a generator seeded ``seed`` orders the other languages (ascending);
    ``update(g, m)`` returns the new g against the ORIGINAL m.
    """
    gen = torch.Generator().manual_seed(seed)
    grads = grads.double()
    out = []
    for ell in range(len(grads)):
        others = [k for k in range(len(grads)) if k != ell]
        g = grads[ell].clone()
        for p in torch.randperm(len(others), generator=gen).tolist():
            g = update(g, grads[others[p]])
        out.append(g)
    return torch.stack(out)


def project_if_conflict(g, m):
    d = torch.dot(g, m)
    return g - d / torch.dot(m, m) * m if d < 0 else g


def vaccinate(target):
    """GradVac step written geometrically: keep g's part orthogonal to m, set its part along m so the
    cosine is the target."""

    def update(g, m):
        m_hat = m / m.norm()
        if torch.dot(g, m_hat) / g.norm() >= target:
            return g
        ortho = g - torch.dot(g, m_hat) * m_hat
        return ortho + target / math.sqrt(1 - target**2) * ortho.norm() * m_hat

    return update


def conflicting(n, w, seed=0):
    return torch.randn(n, w, generator=torch.Generator().manual_seed(seed))


# ---- pcgrad


def test_no_conflict_is_plain_sum():
    grads = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))  # non-negative: every dot >= 0
    torch.testing.assert_close(pcgrad(grads), grads.sum(0))
    torch.testing.assert_close(pcgrad_project(grads), grads)


def test_two_vectors_hand_computed():
    # m1·m2 = −1: g1 = m1 + ½·m2 = (0.5, 0.5); g2 = m2 + 1·m1 = (0, 1) — against the ORIGINAL m1, not g1
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(pcgrad_project(grads), torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    torch.testing.assert_close(pcgrad(grads), torch.tensor([0.5, 1.5]))


def test_conflicting_pair_ends_non_negative_against_both_originals():
    grads = torch.tensor([[3.0, 1.0, -2.0], [-1.0, 2.0, 4.0]])
    assert torch.dot(grads[0], grads[1]) < 0
    projected = pcgrad_project(grads)
    for ell, k in [(0, 1), (1, 0)]:
        expected = grads[ell] - torch.dot(grads[ell], grads[k]) / grads[k].square().sum() * grads[k]
        torch.testing.assert_close(projected[ell], expected)
    assert (projected @ grads.T >= -1e-5).all()


@pytest.mark.parametrize("n, w, seed", [(3, 2, 0), (3, 5, 1), (6, 9, 2), (8, 4, 3), (3, (1 << 16) + 7, 4)])
def test_matches_loop_oracle(n, w, seed):
    grads = conflicting(n, w, seed)
    gen = torch.Generator().manual_seed(seed)
    expected = walk(grads, seed, project_if_conflict).float()
    torch.testing.assert_close(pcgrad_project(grads, gen), expected, rtol=1e-5, atol=1e-5)


def test_order_matters_and_is_reproducible():
    grads = conflicting(5, 3)
    results = [pcgrad(grads, torch.Generator().manual_seed(s)) for s in range(6)]
    assert torch.equal(results[0], pcgrad(grads, torch.Generator().manual_seed(0)))
    assert any(not torch.allclose(results[0], r) for r in results[1:])


def test_default_generator_is_seed_zero():
    grads = conflicting(5, 3)
    assert torch.equal(pcgrad(grads), pcgrad(grads, torch.Generator().manual_seed(0)))
    assert torch.equal(pcgrad(grads), pcgrad(grads))


def test_zero_rows_give_no_nan():
    grads = conflicting(4, 6)
    grads[2] = 0
    projected = pcgrad_project(grads)
    assert torch.isfinite(projected).all()
    assert torch.equal(projected[2], torch.zeros(6))
    without_zero = pcgrad_project(grads[[0, 1, 3]])
    assert torch.isfinite(without_zero).all()
    assert torch.isfinite(pcgrad(torch.zeros(3, 4))).all()


def test_single_language_is_unchanged():
    grads = conflicting(1, 5)
    torch.testing.assert_close(pcgrad(grads), grads[0])


def test_public_contract_path():
    from congrad import pcgrad as public_pcgrad

    grads = conflicting(4, 8)
    out = public_pcgrad(grads)
    assert out.shape == (8,) and out.dtype == torch.float32
    expected = walk(grads, 3, project_if_conflict).sum(0).float()
    got = public_pcgrad(grads, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [torch.zeros(0, 4), torch.zeros(4)])
def test_bad_shapes(bad):
    with pytest.raises(ValueError):
        pcgrad(bad)


# ---- gradvac


@pytest.mark.parametrize("target", [0.0, 0.3, 0.7])
def test_gradvac_pair_reaches_target(target):
    grads = torch.tensor([[2.0, 1.0, 0.0], [-1.0, 0.5, 1.0]])
    assert F.cosine_similarity(grads[0], grads[1], dim=0) < target
    projected = gradvac_project(grads, target=target)
    assert F.cosine_similarity(projected[0], grads[1], dim=0).item() == pytest.approx(target, abs=1e-6)
    assert F.cosine_similarity(projected[1], grads[0], dim=0).item() == pytest.approx(target, abs=1e-6)


def test_gradvac_above_target_is_unchanged():
    grads = torch.tensor([[1.0, 0.2], [1.0, -0.1]])
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.5
    torch.testing.assert_close(gradvac_project(grads, target=0.5), grads)
    torch.testing.assert_close(gradvac(grads, target=0.5), grads.sum(0))


@pytest.mark.parametrize("target", [0.1, 0.5])
def test_gradvac_matches_geometric_oracle(target):
    grads = conflicting(5, 7, seed=5)
    expected = walk(grads, 5, vaccinate(target)).float()
    got = gradvac_project(grads, torch.Generator().manual_seed(5), target=target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gradvac_target_zero_is_pcgrad():
    grads = conflicting(6, 5)
    expected = pcgrad_project(grads)
    torch.testing.assert_close(gradvac_project(grads, target=0.0), expected, rtol=1e-6, atol=1e-6)


def test_gradvac_zero_row_and_bad_target():
    grads = conflicting(3, 4)
    grads[0] = 0
    assert torch.isfinite(gradvac_project(grads, target=0.5)).all()
    for bad in (1.0, -1.0, 2.0):
        with pytest.raises(ValueError):
            gradvac(grads, target=bad)


# ---- mean, consensus, cosine matrix


def test_consensus_dispatch():
    grads = conflicting(4, 6)

    def gen():
        return torch.Generator().manual_seed(2)

    c, p = consensus(grads, "pcgrad", gen())
    torch.testing.assert_close(p, pcgrad_project(grads, gen()))
    torch.testing.assert_close(c, pcgrad(grads, gen()))
    c, p = consensus(grads, "gradvac", gen(), target=0.4)
    torch.testing.assert_close(c, gradvac(grads, gen(), target=0.4))
    c, p = consensus(grads, "mean")
    torch.testing.assert_close(c, grads.mean(0))
    assert p is grads and torch.equal(mean(grads), grads.mean(0))
    c, p = consensus(grads, "none")
    assert c is None and p is grads


def test_consensus_errors():
    grads = conflicting(2, 3)
    with pytest.raises(ConfigError, match="filter.aggregator='cagrad': must be one of pcgrad, gradvac, mean, none"):
        consensus(grads, "cagrad")
    with pytest.raises(ConfigError, match="takes no options"):
        consensus(grads, "mean", target=0.5)
    assert surgery.AGGREGATORS == ("pcgrad", "gradvac", "mean", "none", "random")


def test_cosine_matrix():
    vectors = conflicting(4, 6)
    vectors[1] = 0
    cos = cosine_matrix(vectors)
    assert cos.shape == (4, 4) and torch.isfinite(cos).all()
    for i in range(4):
        for j in range(4):
            expected = 0.0 if 1 in (i, j) else F.cosine_similarity(vectors[i], vectors[j], dim=0).item()
            assert cos[i, j].item() == pytest.approx(expected, abs=1e-6)
