"""Species labels of the BirdCLEF 2021 metadata: parsing, code fixes and weak targets."""

from __future__ import annotations

import ast
import math

import numpy as np

# Secondary labels use a few codes that differ from the class names of the primary labels.
CODE_ALIASES = {"rocpig1": "rocpig"}
NOCALL = "nocall"


class MalformedLabels(ValueError):
    """A secondary_labels cell that is not a list of species codes."""


def parse_secondary_labels(text: object) -> list[str]:
    """Parse a cell like "['amerob', 'rewbla']" without eval; empty cells mean no labels."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if not isinstance(text, str):
        raise MalformedLabels(f"expected a list like ['amerob'], got {text!r}")
    if not text.strip():
        return []
    try:
        value = ast.literal_eval(text)  # parses literals only; never runs code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # TypeError: "{['a']: 1}" (unhashable key); MemoryError/RecursionError: deeply nested input.
        raise MalformedLabels(f"expected a list like ['amerob'], got {text!r}") from None
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise MalformedLabels(f"expected a list of species codes, got {text!r}")
    return [normalize_code(code) for code in value]


def normalize_code(code: str) -> str:
    code = code.strip()
    return CODE_ALIASES.get(code, code)


def split_known(codes: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """Separate codes that are classes from the ones that are not (kept order, no duplicates)."""
    kept = list(dict.fromkeys(code for code in codes if code in known))
    dropped = [code for code in codes if code not in known]
    return kept, dropped


def weak_target(positives: list[str], secondaries: list[str], class_index: dict[str, int],
                secondary_weight: float) -> np.ndarray:
    """Soft multi-hot target: 1.0 for the given positives, `secondary_weight` for secondaries."""
    target = np.zeros(len(class_index), dtype=np.float32)
    for code in secondaries:
        target[class_index[code]] = secondary_weight
    for code in positives:
        target[class_index[code]] = 1.0
    return target
