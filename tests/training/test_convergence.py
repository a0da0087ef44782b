"""stages/training/convergence.py on hand-made histories: epochs and seconds to within 10% of the final valid
loss, the valid loss after each quarter of training, and the sentence naming the faster model (which
leaves out a model that did not learn: by its own first epoch, or against the class prior's loss)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from stages.training.convergence import convergence, faster_model_sentence


def history(losses: list[float], seconds: list[float] | None = None) -> list[dict]:
    seconds = seconds or [10.0] * len(losses)
    return [{"epoch": i + 1, "train_loss": 2 * loss, "valid_loss": loss, "epoch_seconds": s}
            for i, (loss, s) in enumerate(zip(losses, seconds))]


# "Within 10%" of a final loss L: at most 1.1 L. In every history below the epoch found is also within
# 10% in absolute terms (|loss - L| <= 0.1 L), so the two readings of the definition agree.
@pytest.mark.parametrize("losses, seconds, epoch, elapsed", [
    # Monotone: final 0.2, bound 0.22; epoch 4 (0.21) is the first at or below it.
    ([1.0, 0.5, 0.3, 0.21, 0.2], [10.0, 11.0, 12.0, 13.0, 14.0], 4, 46.0),
    # Noisy: final 0.43, bound 0.473; epoch 3 (0.45) is the first, although epoch 4 leaves the band.
    ([1.0, 0.6, 0.45, 0.55, 0.42, 0.44, 0.43], [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 3, 18.0),
    # Rising at the end (overfitting a little): final 0.43, bound 0.473; epoch 3 (0.42).
    ([1.0, 0.5, 0.42, 0.4, 0.43], [2.5, 2.5, 2.5, 2.5, 2.5], 3, 7.5),
    # Flat from the start: epoch 1.
    ([0.3, 0.3, 0.3], [4.0, 4.0, 4.0], 1, 4.0),
    # Only the last epoch gets there.
    ([1.0, 0.8, 0.6, 0.4], [1.0, 2.0, 3.0, 4.0], 4, 10.0),
    # A single epoch.
    ([0.7], [3.5], 1, 3.5),
])
def test_epochs_and_seconds_to_within_10_percent(losses, seconds, epoch, elapsed):
    result = convergence(history(losses, seconds))
    assert result["epochs_to_within_10pct"] == epoch
    assert result["seconds_to_within_10pct"] == pytest.approx(elapsed)
    final = losses[-1]
    assert abs(losses[epoch - 1] - final) <= 0.1 * final
    assert all(loss > 1.1 * final for loss in losses[:epoch - 1])


@pytest.mark.parametrize("epochs, quarter_ends", [
    (1, [1, 1, 1, 1]),
    (3, [1, 2, 3, 3]),
    (4, [1, 2, 3, 4]),
    (5, [2, 3, 4, 5]),   # ceil(1.25, 2.5, 3.75, 5)
    (7, [2, 4, 6, 7]),   # ceil(1.75, 3.5, 5.25, 7)
    (8, [2, 4, 6, 8]),
    (50, [13, 25, 38, 50]),
])
def test_valid_loss_after_each_quarter_rounds_epochs_up(epochs, quarter_ends):
    losses = [1.0 / (epoch + 1) for epoch in range(1, epochs + 1)]  # epoch e has loss 1 / (e + 1)
    result = convergence(history(losses))
    assert [result[f"valid_loss_q{q}"] for q in (1, 2, 3, 4)] == [1.0 / (e + 1) for e in quarter_ends]
    assert result["valid_loss_q4"] == losses[-1]
    assert [math.ceil(q * epochs / 4) for q in (1, 2, 3, 4)] == quarter_ends  # the rule, spelled out


def test_convergence_keys():
    assert set(convergence(history([0.5, 0.4]))) == {
        "learned", "valid_loss_first", "epochs_to_within_10pct", "seconds_to_within_10pct",
        "valid_loss_q1", "valid_loss_q2", "valid_loss_q3", "valid_loss_q4"}


# ------------------------------------------------------------------------------------ the sentence

def readout(epochs: int, seconds: float, learned: bool = True) -> dict:
    return {"learned": learned, "valid_loss_first": 1.0 if learned else 0.32,
            "epochs_to_within_10pct": epochs, "seconds_to_within_10pct": seconds,
            "valid_loss_q1": 1.0, "valid_loss_q2": 0.5, "valid_loss_q3": 0.4, "valid_loss_q4": 0.3}


PRIOR = defaultdict(lambda: 1.0)  # the class prior's valid loss: every readout's final 0.3 is far below


def test_sentence_needs_two_models():
    assert faster_model_sentence({}, PRIOR) == ""
    assert faster_model_sentence({"ast_tiny": readout(3, 30.0)}, PRIOR) == ""


def test_sentence_same_model_faster_in_epochs_and_seconds():
    sentence = faster_model_sentence({"efficientnet_b0": readout(4, 120.0), "ast_tiny": readout(2, 80.0)}, PRIOR)
    assert sentence.startswith("efficientnet_b0 came within 10% of its final valid loss after 4 epoch(s) (120 s); "
                               "ast_tiny came within 10% of its final valid loss after 2 epoch(s) (80 s)")
    assert sentence.endswith(": ast_tiny converged faster, in epochs and in wall-clock time.")


def test_sentence_split_between_epochs_and_seconds():
    # AST needs fewer epochs, but its epochs are slower.
    sentence = faster_model_sentence({"efficientnet_b0": readout(4, 40.0), "ast_tiny": readout(2, 90.0)}, PRIOR)
    assert sentence.endswith(": ast_tiny converged in fewer epochs, efficientnet_b0 in less wall-clock time.")
    sentence = faster_model_sentence({"efficientnet_b0": readout(2, 90.0), "ast_tiny": readout(4, 40.0)}, PRIOR)
    assert sentence.endswith(": efficientnet_b0 converged in fewer epochs, ast_tiny in less wall-clock time.")


def test_sentence_tie_in_epochs_is_decided_by_seconds():
    sentence = faster_model_sentence({"efficientnet_b0": readout(3, 45.0), "ast_tiny": readout(3, 60.0)}, PRIOR)
    assert sentence.endswith(": in epochs they tie; in wall-clock time efficientnet_b0 converged faster.")
    sentence = faster_model_sentence({"efficientnet_b0": readout(3, 75.0), "ast_tiny": readout(3, 60.0)}, PRIOR)
    assert sentence.endswith(": in epochs they tie; in wall-clock time ast_tiny converged faster.")


def test_sentence_from_real_histories():
    """From convergence() of two histories: the second model's loss settles an epoch earlier and its
    epochs are shorter."""
    slow = convergence(history([1.0, 0.6, 0.4, 0.3, 0.3], [20.0] * 5))   # epoch 4, 80 s
    fast = convergence(history([1.0, 0.5, 0.31, 0.3, 0.3], [10.0] * 5))  # epoch 3, 30 s
    assert (slow["epochs_to_within_10pct"], fast["epochs_to_within_10pct"]) == (4, 3)
    sentence = faster_model_sentence({"efficientnet_b0": slow, "ast_tiny": fast}, PRIOR)
    assert "after 4 epoch(s) (80 s)" in sentence and "after 3 epoch(s) (30 s)" in sentence
    assert sentence.endswith("ast_tiny converged faster, in epochs and in wall-clock time.")


@pytest.mark.parametrize("losses, learned", [
    ([0.506, 0.486, 0.481, 0.483, 0.481], False),  # the demo's random-init AST: 5% down, flat
    ([0.5, 0.5, 0.5], False),
    ([0.5, 0.6, 0.7], False),                      # rising
    ([1.0, 0.91], False),                          # exactly 9% down
    ([1.0, 0.89], True),
    ([1.17, 0.56, 1.06, 0.88, 0.22, 0.12, 0.10, 0.11], True),
])
def test_a_model_has_learned_when_its_valid_loss_fell_by_more_than_10_percent(losses, learned):
    assert convergence(history(losses))["learned"] is learned


def test_a_model_that_did_not_learn_is_not_called_faster():
    """A flat loss is 'within 10% of final' at epoch 1: without the learned flag the sentence would
    crown the model that learned nothing."""
    sentence = faster_model_sentence({"efficientnet_b0": readout(7, 67.0), "ast_tiny": readout(1, 24.0, False)}, PRIOR)
    assert "ast_tiny's valid loss fell by less than 10% over training (0.32 to 0.3): it has not started learning" in sentence
    assert sentence.endswith(": only efficientnet_b0 learned, so it converged faster.")
    neither = faster_model_sentence({"a": readout(1, 5.0, False), "b": readout(1, 9.0, False)}, PRIOR)
    assert neither.endswith(": no model learned, so none converged.")


def test_a_model_whose_loss_ends_at_the_class_priors_has_not_learned():
    """The demo's random-init AST: from a bad first epoch (0.60) down to 0.477, the loss of scoring
    every chunk with the species' training shares (0.478). It fell by 20%, yet learned no birds."""
    ast = convergence(history([0.60, 0.48, 0.477, 0.477]))
    assert ast["learned"]  # by its own first epoch
    priors = {"efficientnet_b0": 0.478, "ast_tiny": 0.478}
    sentence = faster_model_sentence({"efficientnet_b0": readout(7, 67.0), "ast_tiny": ast}, priors)
    assert ("ast_tiny's final valid loss (0.477) is not 10% below the class prior's (0.478): it has learned "
            "little beyond each species' share") in sentence
    assert sentence.endswith(": only efficientnet_b0 learned, so it converged faster.")
    # 10% below the prior's is the bar: 0.43 passes against 0.478 (0.4302 is the bound), 0.431 does not.
    for final, passes in ((0.43, True), (0.431, False)):
        readouts = {"efficientnet_b0": readout(7, 67.0), "ast_tiny": convergence(history([0.60, final]))}
        assert ("ast_tiny came within 10%" in faster_model_sentence(readouts, priors)) is passes
