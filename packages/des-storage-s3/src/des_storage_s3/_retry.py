"""Retry policy as plain functions: which failures to retry and how long to wait.

The decisions (:func:`is_retryable`, :func:`plan_retry_delay`, :func:`plan_retry`) do no I/O
and take the random draw as an argument, so they are tested exactly. :func:`call_with_retry`
is the one loop that applies them. botocore's own retries are switched off in every client
this package builds, so each request counted on the wire is one decided here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ._errors import S3StoreError, S3Unavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter and a budget.

    ``max_attempts`` counts every try (1 = never retry). ``budget_seconds`` bounds the total
    time spent sleeping between tries for one call.
    """

    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    budget_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.budget_seconds < 0:
            raise ValueError("retry delays and budget must be >= 0")


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: BaseException) -> bool:
    """True for throttling (503 SlowDown), 5xx, timeouts and dropped or cut connections.

    Never for not-found, access denied, bad ranges or failed preconditions: trying again
    cannot change their answer.
    """
    return isinstance(error, S3StoreError) and error.retryable


def plan_retry_delay(policy: RetryPolicy, attempt: int, draw: float) -> float:
    """Delay before try ``attempt + 1`` after try ``attempt`` (1-based) failed.

    Full jitter: ``draw * min(max_delay, base_delay * 2 ** (attempt - 1))`` with ``draw`` in
    [0, 1).
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    ceiling = min(policy.max_delay, policy.base_delay * (2.0 ** min(attempt - 1, 62)))
    return max(0.0, min(1.0, draw)) * ceiling


def plan_retry(
    policy: RetryPolicy, attempt: int, error: BaseException, slept: float, draw: float
) -> float | None:
    """The delay before the next try, or None to give up (not retryable, attempts or budget
    spent). ``slept`` is the time already spent sleeping for this call.
    """
    if not is_retryable(error) or attempt >= policy.max_attempts:
        return None
    delay = plan_retry_delay(policy, attempt, draw)
    if slept + delay > policy.budget_seconds:
        return None
    return delay


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    translate: Callable[[BaseException], S3StoreError],
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
    on_retry: Callable[[S3StoreError, int], None] | None = None,
) -> T:
    """Run ``fn`` until it succeeds or :func:`plan_retry` gives up; raise the translated error.

    When retries are spent on a retryable error, the message says how many tries were made.
    """
    attempt = 0
    slept = 0.0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            err = translate(exc)
            delay = plan_retry(policy, attempt, err, slept, draw())
            if delay is None:
                if err.retryable and attempt > 1:
                    raise _spent(err, attempt) from exc
                if err is exc:
                    raise
                raise err from exc
            if on_retry is not None:
                on_retry(err, attempt)
            sleep(delay)
            slept += delay


def _spent(err: S3StoreError, attempts: int) -> S3StoreError:
    out = S3Unavailable(
        f"{err} (gave up after {attempts} attempts)",
        bucket=err.bucket,
        key=err.key,
        byte_range=err.byte_range,
        code=err.code,
        status=err.status,
    )
    return out
