"""dpo_loss against values computed by hand from the formulas (math module, not torch)."""

import math

import pytest
import torch

from congrad import dpo_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# (pi_w, pi_l, ref_w, ref_l) per pair
PAIRS = [(-10.0, -12.0, -11.0, -11.5), (-5.0, -4.0, -5.0, -5.0), (-20.0, -20.0, -20.0, -20.0)]
LEN_W, LEN_L = [12.0, 5.0, 7.0], [4.0, 9.0, 7.0]


def tensors():
    cols = list(zip(*PAIRS))
    return [torch.tensor(c, dtype=torch.float64) for c in cols]


def margins(beta, length_penalty=0.0):
    return [
        beta * ((pw - rw) - (pl - rl)) + length_penalty * (lw - ll)
        for (pw, pl, rw, rl), lw, ll in zip(PAIRS, LEN_W, LEN_L)
    ]


def test_sigmoid_matches_hand_computed_values():
    # pair 0: beta * ((-10 + 11) - (-12 + 11.5)) = 0.1 * 1.5 = 0.15 -> -log(sigmoid(0.15))
    out = dpo_loss(*tensors(), beta=0.1)
    assert out.shape == (3,)
    assert out[0].item() == pytest.approx(-logsig(0.15), abs=1e-12)
    assert out[2].item() == pytest.approx(math.log(2), abs=1e-12)  # policy == reference: log 2
    assert out.tolist() == pytest.approx([-logsig(h) for h in margins(0.1)], abs=1e-12)


def test_length_penalty_is_added_inside_the_sigmoid():
    """R-DPO: the implicit reward is beta * log-ratio + alpha * |y|, so the margin gains alpha * (|y_w| - |y_l|)."""
    lw, ll = torch.tensor(LEN_W, dtype=torch.float64), torch.tensor(LEN_L, dtype=torch.float64)
    out = dpo_loss(*tensors(), beta=0.1, length_penalty=0.05, chosen_lengths=lw, rejected_lengths=ll)
    # pair 0: 0.15 + 0.05 * (12 - 4) = 0.55; pair 1: 0.1 * (0 - 1) + 0.05 * (5 - 9) = -0.3
    assert out[0].item() == pytest.approx(-logsig(0.55), abs=1e-12)
    assert out[1].item() == pytest.approx(-logsig(-0.3), abs=1e-12)
    assert out.tolist() == pytest.approx([-logsig(h) for h in margins(0.1, 0.05)], abs=1e-12)


def test_a_longer_chosen_answer_gets_a_smaller_loss_and_gradient_with_the_length_penalty():
    """From first principles: d(-log σ(h))/d pi_w = -beta * σ(-h), and h grows with alpha * (|y_w| - |y_l|) > 0."""
    beta, alpha = 0.1, 0.05
    lw, ll = torch.tensor([12.0]), torch.tensor([4.0])  # the chosen answer is 8 tokens longer

    def loss_and_grad(length_penalty):
        pw = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
        loss = dpo_loss(
            pw,
            torch.tensor([-12.0]),
            torch.tensor([-11.0]),
            torch.tensor([-11.5]),
            beta=beta,
            length_penalty=length_penalty,
            chosen_lengths=lw,
            rejected_lengths=ll,
        )
        loss.sum().backward()
        return loss.item(), pw.grad.item()

    plain_loss, plain_grad = loss_and_grad(0.0)
    lp_loss, lp_grad = loss_and_grad(alpha)
    assert lp_loss < plain_loss
    assert abs(lp_grad) < abs(plain_grad)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert plain_grad == pytest.approx(-beta * sigmoid(-0.15), abs=1e-12)
    assert lp_grad == pytest.approx(-beta * sigmoid(-0.55), abs=1e-12)
    # the same pair with a shorter chosen answer is penalised instead
    short = dpo_loss(
        torch.tensor([-10.0]),
        torch.tensor([-12.0]),
        torch.tensor([-11.0]),
        torch.tensor([-11.5]),
        beta=beta,
        length_penalty=alpha,
        chosen_lengths=ll,
        rejected_lengths=lw,
    )
    assert short.item() == pytest.approx(-logsig(0.15 - 0.4), abs=1e-6) and short.item() > plain_loss


def test_length_penalty_needs_lengths():
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(*tensors(), beta=0.1, length_penalty=0.1)


def test_label_smoothing_sigmoid_and_robust():
    eps, beta = 0.1, 0.5
    hs = margins(beta)
    sig = dpo_loss(*tensors(), beta=beta, label_smoothing=eps)
    assert sig.tolist() == pytest.approx([-(1 - eps) * logsig(h) - eps * logsig(-h) for h in hs], abs=1e-12)
    rob = dpo_loss(*tensors(), beta=beta, loss_type="robust", label_smoothing=eps)
    expected = [(-(1 - eps) * logsig(h) + eps * logsig(-h)) / (1 - 2 * eps) for h in hs]
    assert rob.tolist() == pytest.approx(expected, abs=1e-12)
    # without smoothing, robust DPO is plain DPO
    assert dpo_loss(*tensors(), beta=beta, loss_type="robust").tolist() == pytest.approx(
        dpo_loss(*tensors(), beta=beta).tolist(), abs=1e-12
    )


def test_ipo_averages_the_log_ratios_per_token():
    """TRL's IPO: (Δ_w / |y_w| - Δ_l / |y_l| - 1 / (2 beta))^2 on summed log-probs Δ = pi - ref."""
    beta = 0.2
    lw, ll = torch.tensor(LEN_W, dtype=torch.float64), torch.tensor(LEN_L, dtype=torch.float64)
    out = dpo_loss(*tensors(), beta=beta, loss_type="ipo", chosen_lengths=lw, rejected_lengths=ll)
    # pair 0: 1 / 12 - (-0.5) / 4 = 0.208333...; (0.208333 - 2.5)^2
    assert out[0].item() == pytest.approx((1 / 12 + 0.5 / 4 - 2.5) ** 2, abs=1e-12)
    expected = [
        ((pw - rw) / nw - (pl - rl) / nl - 1 / (2 * beta)) ** 2 for (pw, pl, rw, rl), nw, nl in zip(PAIRS, LEN_W, LEN_L)
    ]
    assert out.tolist() == pytest.approx(expected, abs=1e-12)
    # with the length penalty, alpha / beta * (|y_w| - |y_l|) joins the averaged difference
    lp = dpo_loss(*tensors(), beta=beta, loss_type="ipo", length_penalty=0.01, chosen_lengths=lw, rejected_lengths=ll)
    assert lp[0].item() == pytest.approx((1 / 12 + 0.5 / 4 + 0.01 / 0.2 * 8 - 2.5) ** 2, abs=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(*tensors(), beta=0.1, loss_type="hinge2")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*tensors(), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*tensors(), beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(*tensors(), beta=0.1, loss_type="ipo")


def test_gradient_direction_at_the_reference_point():
    """At policy == reference the DPO gradient is -beta/2 * (grad log pi_w - grad log pi_l)."""
    pw = torch.tensor([-3.0], requires_grad=True)
    pl_ = torch.tensor([-4.0], requires_grad=True)
    dpo_loss(pw, pl_, pw.detach(), pl_.detach(), beta=0.1).sum().backward()
    assert pw.grad.item() == pytest.approx(-0.05)
    assert pl_.grad.item() == pytest.approx(0.05)
