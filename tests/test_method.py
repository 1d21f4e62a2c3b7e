"""The ConGrad pass as a whole: one vote per pair (``normalize``), and the seed of the random arm.

The real-model study (docs/results.md) found that once the policy has fit most pairs, the pairs it still
gets wrong carry most of the gradient norm (a pair's DPO gradient is scaled by σ(−h)) and, summed raw,
turn the consensus toward themselves. These tests guard the mechanism, not the study's numbers.
"""

import torch
from test_dpo_module import make_batch, make_module

from congrad.filtering.method import NO_SIGNAL, ROUNDING_LEVEL, ConGrad, without_signal
from congrad.filtering.sketching import PerPairSketcher


def majority_and_loud_minority(seed=0, w=64, per_language=8, flipped=2, loud=20.0):
    """Per language: ``per_language`` unit-norm pairs around a shared direction u, and ``flipped`` pairs
    around −u with ``loud`` times the norm. Returns (sketches, languages, flipped mask)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(w, generator=g)
    u /= u.norm()
    rows, languages, is_flipped = [], [], []
    for lang in ("en", "de", "hi"):
        for i in range(per_language + flipped):
            bad = i >= per_language
            v = (-u if bad else u) + 0.3 * torch.randn(w, generator=g) / w**0.5
            rows.append(v / v.norm() * (loud if bad else 1.0))
            languages.append(lang)
            is_flipped.append(bad)
    return torch.stack(rows), languages, torch.tensor(is_flipped)


def test_unit_norm_votes_keep_the_majority_where_raw_sums_follow_the_loud_minority():
    sketches, languages, flipped = majority_and_loud_minority()
    keep = dict(keep_ratio=0.8, per_language=False, min_per_language=0)
    voted = ConGrad(normalize=True, **keep).step(sketches, languages)
    assert not voted.kept[flipped].any() and voted.kept[~flipped].all()
    summed = ConGrad(normalize=False, **keep).step(sketches, languages)
    assert summed.kept[flipped].all()  # the failure the option exists for


def test_kept_set_ignores_each_pairs_scale_on_real_sketches():
    """Tiny model, a real batched sketch pass: rescaling any pair's gradient (what σ(−h) does as training
    goes on) changes neither the scores nor the kept set when every pair has one vote."""
    module = make_module(lora=True).eval()
    n = 12
    batch = make_batch(
        prompt_lens=tuple(range(2, 2 + n)),
        chosen_lens=(3, 5, 2, 4, 6, 1, 2, 3, 7, 2, 4, 5),
        rejected_lens=(2, 2, 5, 6, 1, 3, 4, 4, 2, 6, 3, 1),
        seed=11,
    )
    languages = ["en", "de", "hi"] * (n // 3)
    sketches = PerPairSketcher(module, 1024, 7, method="hooks")(batch)
    scale = torch.exp(3 * torch.randn(n, 1, generator=torch.Generator().manual_seed(0)))
    settings = dict(keep_ratio=0.5, per_language=False, min_per_language=1)
    plain = ConGrad(**settings).step(sketches, languages)
    rescaled = ConGrad(**settings).step(sketches * scale, languages)
    torch.testing.assert_close(rescaled.scores, plain.scores, atol=1e-5, rtol=0)
    assert torch.equal(rescaled.kept, plain.kept)


def test_random_arm_draws_per_seed_and_repeats_within_one():
    sketches, languages, _ = majority_and_loud_minority()
    kept = {seed: ConGrad(aggregator="random", seed=seed).step(sketches, languages).kept for seed in (0, 0, 1)}
    again = ConGrad(aggregator="random", seed=0).step(sketches, languages).kept
    assert torch.equal(kept[0], again)
    assert not torch.equal(kept[0], kept[1])
    assert int(kept[0].sum()) == int(kept[1].sum())


def test_a_pair_without_a_preference_gets_no_vote_and_is_dropped_with_its_reason():
    """Tiny model, a real batched sketch pass: in 3 of 12 pairs the rejected completion is the chosen one,
    token for token. Their DPO gradient is zero and their sketches are rounding (about 5e-8 of the median
    norm), which one vote per pair would blow up into full votes and scores like real pairs'. They get no
    vote (the aggregates and the kept set are those of the other 9 pairs alone), no score, and are dropped
    with their reason."""
    module = make_module(lora=True).eval()
    n = 12
    batch = make_batch(
        prompt_lens=tuple(range(2, 2 + n)),
        chosen_lens=(3, 5, 2, 4, 6, 1, 2, 3, 7, 2, 4, 5),
        rejected_lens=(2, 2, 5, 6, 1, 3, 4, 4, 2, 6, 3, 1),
        seed=11,
    )
    same = [1, 6, 11]
    for j in same:
        for key in ("input_ids", "attention_mask", "completion_mask"):
            batch[key][n + j] = batch[key][j]
    languages = ["en", "de", "hi"] * (n // 3)
    sketches = PerPairSketcher(module, 1024, 7, method="hooks")(batch)
    norms = sketches.norm(dim=1)
    assert (norms[same] < 1e-6 * norms.median()).all() and (norms[same] > 0).any()  # rounding, not exact zeros
    settings = dict(keep_ratio=0.5, per_language=False, min_per_language=1)
    result = ConGrad(**settings).step(sketches, languages)
    others = [i for i in range(n) if i not in same]
    alone = ConGrad(**settings).step(sketches[others], [languages[i] for i in others])
    assert result.no_signal.tolist() == [i in same for i in range(n)]
    assert not result.kept[same].any() and torch.isnan(result.scores[same]).all()
    assert [result.reason(i) for i in same] == [NO_SIGNAL] * 3
    assert torch.equal(result.kept[others], alone.kept)
    torch.testing.assert_close(result.scores[others], alone.scores, atol=0, rtol=0)
    torch.testing.assert_close(result.cosine_before, alone.cosine_before, atol=0, rtol=0)
    assert result.per_language()["de"]["no_signal"] == 1 and result.per_language()["de"]["total"] == 4


def test_the_rounding_bar_is_relative_to_the_median_norm():
    """A zero sketch and one at 1e-7 of the median have no signal; one at 1e-3 of it (a pair the policy fits
    well: σ(−h) a thousand times smaller) keeps its vote, whatever the scale of the whole pass."""
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(9, 32, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    for scale in (1e-6, 1.0, 1e6):
        norms = torch.tensor([1.0, 2.0, 0.5, 1.5, 0.8, 1.2, 0.0, 1e-7, 1e-3]) * scale  # median 0.8
        assert without_signal(directions * norms[:, None]).tolist() == [False] * 6 + [True, True, False]
    assert ROUNDING_LEVEL == 1e-5


def test_a_pass_without_any_signal_is_an_error():
    import pytest

    from congrad.errors import CongradError

    with pytest.raises(CongradError, match="none of the 4 pairs has a DPO gradient above rounding level"):
        ConGrad().step(torch.zeros(4, 16), ["en", "en", "de", "de"])
