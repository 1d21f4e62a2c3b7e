import math

import pytest
import torch
import torch.nn.functional as F

from congrad.filtering.aggregates import LanguageAggregates, language_rows
from congrad.filtering.selection import (
    BELOW_KEEP_RATIO,
    BELOW_THRESHOLD,
    cosine_scores,
    drop_reason,
    own_language_scores,
    select,
)


def by_hand(scores, rows, k):
    """Oracle: the k best of ``rows`` by (score descending, index ascending)."""
    return set(sorted(rows, key=lambda i: (-scores[i], i))[:k])


def mask_of(indices, n):
    return [i in indices for i in range(n)]


# ---- aggregates


def t(*values):
    return torch.tensor([values], dtype=torch.float32)


def test_ema_over_three_epochs():
    agg = LanguageAggregates(ema=0.5)
    agg.add(torch.cat([t(1, 0), t(3, 2)]), ["de", "de"])  # de mean (2, 1)
    agg.add(t(4, 4), ["fr"])
    agg.finish_epoch()
    assert agg.languages == ["de", "fr"]
    torch.testing.assert_close(agg.matrix(), torch.tensor([[2.0, 1.0], [4.0, 4.0]]))  # first sight: the mean

    agg.add(torch.cat([t(0, 0), t(6, 3)]), ["de", "de"])  # means are over the whole pass, not per batch:
    agg.add(t(0, 3), ["de"])  # de mean (2, 2)
    agg.add(t(1, 2), ["ja"])
    agg.finish_epoch()
    assert agg.languages == ["de", "fr", "ja"]
    expected = torch.tensor([[0.5 * 2 + 0.5 * 2, 0.5 * 1 + 0.5 * 2], [4.0, 4.0], [1.0, 2.0]])
    torch.testing.assert_close(agg.matrix(), expected)  # fr unseen: kept; ja new: its mean

    agg.add(t(0, 0), ["fr"])
    agg.finish_epoch()
    expected[1] = torch.tensor([2.0, 2.0])
    torch.testing.assert_close(agg.matrix(), expected)


def test_ema_zero_is_last_epoch_mean():
    agg = LanguageAggregates(ema=0.0)
    for batch in ([t(9, 9)], [t(1, 2), t(3, 4)]):
        agg.add(torch.cat(batch), ["sw"] * len(batch))
        agg.finish_epoch()
    torch.testing.assert_close(agg.matrix(), torch.tensor([[2.0, 3.0]]))


def test_state_dict_round_trip():
    agg = LanguageAggregates(ema=0.9)
    agg.add(torch.randn(6, 5), ["de", "en", "de", "zh", "en", "en"])
    agg.finish_epoch()
    state = agg.state_dict()
    assert state["languages"] == ["de", "en", "zh"] and state["means"].shape == (3, 5)

    restored = LanguageAggregates(ema=0.9)
    restored.load_state_dict(state)
    assert restored.languages == agg.languages and torch.equal(restored.matrix(), agg.matrix())
    batch = torch.randn(3, 5)
    for a in (agg, restored):
        a.add(batch, ["zh", "de", "de"])
        a.finish_epoch()
    assert torch.equal(restored.matrix(), agg.matrix())


def test_aggregates_errors_and_empty():
    agg = LanguageAggregates()
    assert agg.languages == [] and agg.matrix().shape == (0, 0)
    with pytest.raises(ValueError):
        agg.add(torch.zeros(2, 3), ["de"])
    agg.add(torch.zeros(1, 3), ["de"])
    with pytest.raises(RuntimeError):
        agg.state_dict()
    with pytest.raises(ValueError):
        LanguageAggregates(ema=1.0)


def test_language_rows():
    rows = language_rows(["b", "a", "b", "c", "a"])
    assert {k: v.tolist() for k, v in rows.items()} == {"b": [0, 2], "a": [1, 4], "c": [3]}


# ---- scores


def test_cosine_scores_and_zero_vectors():
    sketches = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    sketches[3] = 0
    direction = torch.randn(7, generator=torch.Generator().manual_seed(1))
    scores = cosine_scores(sketches, direction)
    expected = F.cosine_similarity(sketches, direction[None], dim=1)
    expected[3] = 0
    torch.testing.assert_close(scores, expected)
    assert torch.equal(cosine_scores(sketches, torch.zeros(7)), torch.zeros(5))


def test_own_language_scores():
    agg = LanguageAggregates()
    agg.add(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), ["de", "fr"])
    agg.finish_epoch()
    sketches = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    scores = own_language_scores(sketches, ["de", "fr", "de", "fr"], agg)
    torch.testing.assert_close(scores, torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0]))
    with pytest.raises(ValueError, match="ja"):
        own_language_scores(sketches[:1], ["ja"], agg)


# ---- select

SCORES = [0.9, -0.2, 0.4, 0.4, 0.1, 0.7, -0.5, 0.4, 0.0, 0.3]
LANGS = ["de", "fr", "de", "fr", "fr", "de", "ja", "ja", "fr", "de"]


def test_keep_ratio_global():
    scores = torch.tensor(SCORES)
    for ratio in (0.1, 0.25, 0.3, 0.5, 1.0):
        k = math.ceil(round(ratio * 10, 6))
        got = select(scores, LANGS, keep_ratio=ratio)
        assert got.dtype == torch.bool
        assert got.tolist() == mask_of(by_hand(SCORES, range(10), k), 10), ratio
    assert select(scores, LANGS, keep_ratio=0.3).sum() == 3  # not 4 from 0.3·10 = 3.0000000000000004


def test_keep_ratio_per_language():
    got = select(torch.tensor(SCORES), LANGS, keep_ratio=0.5, per_language=True)
    expected = set()
    for lang in set(LANGS):
        rows = [i for i, code in enumerate(LANGS) if code == lang]
        expected |= by_hand(SCORES, rows, math.ceil(0.5 * len(rows)))
    assert got.tolist() == mask_of(expected, 10)


def test_threshold_is_strict():
    got = select(torch.tensor(SCORES), LANGS, threshold=0.4)
    assert got.tolist() == [s > 0.4 for s in SCORES]


def test_floor_adds_each_languages_best():
    got = select(torch.tensor(SCORES), LANGS, threshold=0.8, min_per_language=2)
    expected = {0}
    for lang in set(LANGS):
        rows = [i for i, code in enumerate(LANGS) if code == lang]
        expected |= by_hand(SCORES, rows, 2)
    assert got.tolist() == mask_of(expected, 10)
    everything = select(torch.tensor(SCORES), LANGS, keep_ratio=0.1, min_per_language=100)
    assert everything.all()


def test_ties_resolve_by_index():
    scores = torch.tensor([0.5, 0.5, 0.9, 0.5, 0.5])
    assert select(scores, ["x"] * 5, keep_ratio=0.4).tolist() == [True, False, True, False, False]
    assert select(scores, ["x"] * 5, keep_ratio=0.6).tolist() == [True, True, True, False, False]
    floor = select(scores, ["x", "y", "x", "y", "y"], threshold=1.0, min_per_language=1)
    assert floor.tolist() == [False, True, True, False, False]


def test_select_errors():
    scores = torch.tensor(SCORES)
    for kwargs in (
        {},
        {"keep_ratio": 0.5, "threshold": 0.0},
        {"keep_ratio": 0.0},
        {"keep_ratio": 1.5},
        {"keep_ratio": 0.5, "min_per_language": -1},
        {"threshold": float("nan")},
    ):
        with pytest.raises(ValueError):
            select(scores, LANGS, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        select(torch.tensor([0.1, float("nan")]), ["de", "de"], keep_ratio=0.5)
    with pytest.raises(ValueError):
        select(scores, LANGS[:3], keep_ratio=0.5)


def test_empty_and_drop_reasons():
    assert select(torch.zeros(0), [], keep_ratio=0.5).shape == (0,)
    assert drop_reason(threshold=0.0) == BELOW_THRESHOLD == "below threshold"
    assert drop_reason(keep_ratio=0.5) == BELOW_KEEP_RATIO == "below keep_ratio cut"
    with pytest.raises(ValueError):
        drop_reason()
