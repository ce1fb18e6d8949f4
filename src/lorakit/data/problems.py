"""Problems found in a dataset, collected instead of raised, so one check lists every bad file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

ERROR, WARNING, NOTE = "error", "warning", "note"


@dataclass(frozen=True)
class Problem:
    """One finding. `error` blocks training, `warning` trains but is probably a mistake,
    `note` is information (a conversion lorakit made, a file it skipped on purpose)."""

    level: str
    path: Path | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        return f"{self.level}: {where}{self.message}"


class Problems(list):
    """A list of `Problem` with shortcuts to add and filter them."""

    def error(self, path: Path | str | None, message: str) -> None:
        self.append(Problem(ERROR, _path(path), message))

    def warning(self, path: Path | str | None, message: str) -> None:
        self.append(Problem(WARNING, _path(path), message))

    def note(self, path: Path | str | None, message: str) -> None:
        self.append(Problem(NOTE, _path(path), message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.level == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self if p.level == WARNING]

    def for_path(self, path: Path) -> list[Problem]:
        return [p for p in self if p.path == path]

    def raise_if_errors(self, what: str = "the dataset") -> None:
        """Stop before training with every error listed, not just the first one."""
        errors = self.errors
        if len(errors) == 1:
            where = f"{errors[0].path}: " if errors[0].path else ""
            raise DatasetError(
                f"{where}{errors[0].message} (in {what}, which must be fixed before training). "
                "Run 'lorakit dataset check' on it to see the whole report."
            )
        if errors:
            lines = "\n".join(f"  {p.path}: {p.message}" if p.path else f"  {p.message}" for p in errors)
            raise DatasetError(
                f"{len(errors)} problem(s) in {what} must be fixed before training:\n{lines}\n"
                "Run 'lorakit dataset check' on it to see the whole report."
            )


def _path(path: Path | str | None) -> Path | None:
    return Path(path) if path is not None else None
