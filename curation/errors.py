"""One small error taxonomy for the data side.

Every failure a user can act on is a :class:`CurationError`. The CLI prints its
message on one line and exits non-zero; the operator maps ``permanent`` errors to a
``Failed`` condition and the others to a retry, using ``reason`` as the constant
Kubernetes event reason.
"""

from __future__ import annotations


class CurationError(Exception):
    """Base class: a failure with a message a person can act on."""

    reason: str = "CurationError"
    permanent: bool = True
    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpecError(CurationError):
    """The pipeline spec is invalid (unknown stage, bad parameter, bad paths)."""

    reason = "InvalidSpec"


class InputDataError(CurationError):
    """The input dataset is unreadable, empty or lacks a required column."""

    reason = "InvalidInput"


class ModelNotFoundError(CurationError):
    """A model the spec names is not present in the models location."""

    reason = "ModelNotFound"


class MissingDependencyError(CurationError):
    """An optional dependency (an extra) is not installed."""

    reason = "MissingDependency"


class ConservationError(CurationError):
    """Documents were lost or duplicated between input and output/rejected."""

    reason = "ConservationViolated"
    exit_code = 3


class StepError(CurationError):
    """A step could not run (e.g. a previous step's output is missing)."""

    reason = "StepFailed"
    permanent = False
    exit_code = 4


class DiskFullError(CurationError):
    """A write failed for lack of space (ENOSPC, or a quota); the run resumes once space is freed."""

    reason = "DiskFull"
    permanent = False
    exit_code = 4


class OutputInUseError(CurationError):
    """Another `thresher run` holds the output folder's lock."""

    reason = "OutputInUse"
    permanent = False
    exit_code = 4


class SourceLossError(CurationError):
    """A source lost more of its documents than `maxSourceLoss` allows (the numbers are in the message)."""

    reason = "SourceLossExceeded"
