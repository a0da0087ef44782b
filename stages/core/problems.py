"""Per-file problems in the input data: fail (data.strict) or skip and list them in the report."""

from __future__ import annotations

from dataclasses import dataclass, field


class DatasetError(ValueError):
    """The dataset cannot be read as BirdCLEF 2021 data; the message says what to fix."""


@dataclass
class Problems:
    """Every file or row that was skipped (or, with data.strict, that stopped the stage)."""
    strict: bool
    skipped: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def skip(self, where: str, row: int | None, reason: str) -> None:
        if self.strict:
            row_text = f", row {row}" if row is not None else ""
            raise DatasetError(
                f"{where}{row_text}: {reason}. Fix or remove it, or set data.strict: false in "
                "params.yaml to skip such files and list them in the data report.")
        self.skipped.append({"file": where, "row": row, "reason": reason})

    def warn(self, where: str, row: int | None, reason: str) -> None:
        self.warnings.append({"file": where, "row": row, "reason": reason})
