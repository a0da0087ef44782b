"""How fast a model converged, read from its per-epoch history (the reference's open question 1).

Two readouts per model, written to the training summary and compared by the report:
- the first epoch (and the wall-clock seconds up to its end) whose valid loss is within
  CONVERGED_WITHIN of the run's final valid loss;
- the valid loss after each quarter of training (epochs rounded up), so curves of runs with
  different epoch counts compare at the same fraction of their budget.
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
        "epochs_to_within_10pct": history[reached]["epoch"],
        "seconds_to_within_10pct": sum(record["epoch_seconds"] for record in history[:reached + 1]),
        **after_quarter,
    }


def faster_model_sentence(readouts: dict[str, dict]) -> str:
    """One sentence naming which model converged faster, from each model's `convergence()`."""
    if len(readouts) < 2:
        return ""
    parts = [f"{model} came within 10% of its final valid loss after {r['epochs_to_within_10pct']} "
             f"epoch(s) ({r['seconds_to_within_10pct']:.0f} s)" for model, r in readouts.items()]
    by_epochs = min(readouts, key=lambda m: (readouts[m]["epochs_to_within_10pct"], m))
    by_seconds = min(readouts, key=lambda m: (readouts[m]["seconds_to_within_10pct"], m))
    tied = len({r["epochs_to_within_10pct"] for r in readouts.values()}) == 1
    if tied:
        verdict = f"in epochs they tie; in wall-clock time {by_seconds} converged faster"
    elif by_epochs == by_seconds:
        verdict = f"{by_epochs} converged faster, in epochs and in wall-clock time"
    else:
        verdict = f"{by_epochs} converged in fewer epochs, {by_seconds} in less wall-clock time"
    return "; ".join(parts) + f": {verdict}."
