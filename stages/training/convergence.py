"""How fast a model converged, read from its per-epoch history (the reference's open question 1).

Two readouts per model, written to the training summary and compared by the report:
- the first epoch (and the wall-clock seconds up to its end) whose valid loss is within
  CONVERGED_WITHIN of the run's final valid loss;
- the valid loss after each quarter of training (epochs rounded up), so curves of runs with
  different epoch counts compare at the same fraction of their budget.
A model whose valid loss fell by less than CONVERGED_WITHIN from its first epoch has not started
learning: its loss is "within 10% of final" from the start, which says nothing about speed, so the
comparison leaves it out and says so. So does it a model whose final valid loss is not that far
below the class prior's (each species' training share as every chunk's score, scored by evaluate):
a loss that fell from a bad first epoch to the prior's has learned the shares, not the birds.
"""

from __future__ import annotations

import math

CONVERGED_WITHIN = 0.10  # "within 10% of the final valid loss", the definition
QUARTERS = (1, 2, 3, 4)


def convergence(history: list[dict]) -> dict:
    """`history`: per-epoch records with epoch (1-based), valid_loss and epoch_seconds."""
    final = history[-1]["valid_loss"]
    bound = final * (1 + CONVERGED_WITHIN)
    reached = next(i for i, record in enumerate(history) if record["valid_loss"] <= bound)
    epochs = len(history)
    after_quarter = {f"valid_loss_q{q}": history[math.ceil(q * epochs / len(QUARTERS)) - 1]["valid_loss"]
                     for q in QUARTERS}
    return {
        "learned": final < history[0]["valid_loss"] * (1 - CONVERGED_WITHIN),
        "valid_loss_first": history[0]["valid_loss"],
        "epochs_to_within_10pct": history[reached]["epoch"],
        "seconds_to_within_10pct": sum(record["epoch_seconds"] for record in history[:reached + 1]),
        **after_quarter,
    }


def faster_model_sentence(readouts: dict[str, dict], prior_valid_loss: dict[str, float]) -> str:
    """One sentence naming which model converged faster, from each model's `convergence()` and the
    class-prior baseline's valid loss on its valid split."""
    if len(readouts) < 2:
        return ""
    parts, learned = [], {}
    for model, r in readouts.items():
        prior = prior_valid_loss[model]
        if not r["learned"]:
            parts.append(f"{model}'s valid loss fell by less than 10% over training ({r['valid_loss_first']:.3g} "
                         f"to {r['valid_loss_q4']:.3g}): it has not started learning")
        elif r["valid_loss_q4"] >= prior * (1 - CONVERGED_WITHIN):
            parts.append(f"{model}'s final valid loss ({r['valid_loss_q4']:.3g}) is not 10% below the class "
                         f"prior's ({prior:.3g}): it has learned little beyond each species' share")
        else:
            learned[model] = r
            parts.append(f"{model} came within 10% of its final valid loss after {r['epochs_to_within_10pct']} "
                         f"epoch(s) ({r['seconds_to_within_10pct']:.0f} s)")
    return "; ".join(parts) + f": {_verdict(learned)}."


def _verdict(learned: dict[str, dict]) -> str:
    if not learned:
        return "no model learned, so none converged"
    if len(learned) == 1:
        return f"only {next(iter(learned))} learned, so it converged faster"
    by_epochs = min(learned, key=lambda m: (learned[m]["epochs_to_within_10pct"], m))
    by_seconds = min(learned, key=lambda m: (learned[m]["seconds_to_within_10pct"], m))
    if len({r["epochs_to_within_10pct"] for r in learned.values()}) == 1:
        return f"in epochs they tie; in wall-clock time {by_seconds} converged faster"
    if by_epochs == by_seconds:
        return f"{by_epochs} converged faster, in epochs and in wall-clock time"
    return f"{by_epochs} converged in fewer epochs, {by_seconds} in less wall-clock time"
