"""Errors a user can cause. Each carries one sentence naming the file, row or field at fault."""

from __future__ import annotations


class MtfleetError(Exception):
    """Base of every error mtfleet reports to a user without a traceback."""


class DatasetError(MtfleetError):
    """The input dataset is missing, unreadable or malformed."""


class FieldPathError(MtfleetError):
    """A field path is malformed or matches nothing in the dataset."""


class ModelError(MtfleetError):
    """The model is missing, broken, or cannot take the requested languages."""


class OutputError(MtfleetError):
    """The output cannot be written."""


class JobError(MtfleetError):
    """A job cannot be started, resumed or finished as asked."""


class StoreError(MtfleetError):
    """The job store cannot be reached or holds something unexpected."""


class ApiError(MtfleetError):
    """The mtfleet API refused a request, or cannot be reached or started as configured.

    `status` is the HTTP status the API answered with; None when no answer came. `field` is the
    job request's field a refusal of a submission is about (None: the request as a whole);
    `refused` is True for such a refusal, whose body names its field.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        *,
        field: str | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.refused = refused or field is not None


class Interrupted(MtfleetError):
    """The user stopped a command that runs a job (Ctrl-C): the job is paused, not lost."""
