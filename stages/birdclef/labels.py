"""Species labels of the BirdCLEF 2021 metadata: parsing, code fixes and weak targets."""

from __future__ import annotations

import ast
import math
import re

import numpy as np

# Secondary labels use a few codes that differ from the class names of the primary labels.
CODE_ALIASES = {"rocpig1": "rocpig"}
NOCALL = "nocall"
# The form of a species code in BirdCLEF 2021 (eBird codes: "amerob", "rocpig1"): lowercase ASCII
# letters and digits, nothing else. A code is a folder name under train_short_audio/ and a line of
# classes.txt, so whitespace or any other character in it would break one of the two.
CODE_FORM = re.compile(r"[a-z0-9]+")
CODE_RULE = "lowercase ASCII letters and digits, like 'amerob', and not 'nocall'"


class MalformedLabels(ValueError):
    """A label cell (secondary_labels, a soundscape's birds) that is not species codes; the message
    says why."""


def parse_secondary_labels(text: object) -> list[str]:
    """Parse a cell like "['amerob', 'rewbla']" without eval; empty cells mean no labels.

    Returns normalized codes (`normalize_code`), every one in the code form (`is_code`); anything
    else raises MalformedLabels, whatever the input.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if not isinstance(text, str):
        raise MalformedLabels(f"expected a list like ['amerob'], got {shown(text)}")
    if not text.strip():
        return []
    try:
        value = ast.literal_eval(text)  # parses literals only; never runs code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # TypeError: "{['a']: 1}" (unhashable key); MemoryError/RecursionError: deeply nested input.
        raise MalformedLabels(f"expected a list like ['amerob'], got {shown(text)}") from None
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise MalformedLabels(f"expected a list of species codes, got {shown(text)}")
    codes = [normalize_code(code) for code in value]
    for code in codes:
        if not is_code(code):
            raise MalformedLabels(f"{shown(code)} is not a species code ({CODE_RULE})")
    return codes


def normalize_code(code: str) -> str:
    """The class a code stands for: surrounding whitespace stripped, then known aliases resolved.

    Stripping is the one repair made: " amerob" or "amerob\\t" can only mean "amerob" (a cell padded
    by hand or by a tool). Whitespace inside a code ("ame rob") or any other character outside the
    code form (upper case, punctuation, non-ASCII) is left as it is, and `is_code` rejects it.
    """
    code = code.strip()
    return CODE_ALIASES.get(code, code)


def is_code(code: str) -> bool:
    """True for a species code in BirdCLEF's form (CODE_FORM); check after `normalize_code`.
    `nocall` is not one: it means "no bird" in soundscape labels and in the metric."""
    return code != NOCALL and CODE_FORM.fullmatch(code) is not None


def shown(value: object, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters: for messages about cells of any size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


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
