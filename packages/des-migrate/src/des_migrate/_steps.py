"""How a step's unexpected errors become ``StepFailed`` for the whole batch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._errors import StepFailed
from ._verifier import brief

__all__ = ["is_store_outage", "step_errors"]


@contextlib.contextmanager
def step_errors(step: str) -> Iterator[None]:
    """Turn any unexpected error inside a step into StepFailed(step, ...)."""
    try:
        yield
    except StepFailed:
        raise
    except Exception as exc:
        raise StepFailed(step, brief(exc)) from exc


def is_store_outage(exc: BaseException) -> bool:
    from des_format import StorageUnavailable

    return isinstance(exc, StorageUnavailable)
