"""Retries with exponential backoff and jitter for calls to remote platforms.

A failure is retried when it can change by itself: HTTP 429 (waiting at least the server's
`Retry-After`), HTTP 408 and 5xx, dropped or refused connections and timeouts. Any other HTTP
error (400, 401, 403, 404, ...) is raised at once, because the same request gets the same
response again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
import urllib3.exceptions

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Delays are in seconds."""

    attempts: int = 6
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    # Each backoff delay is drawn from [delay * (1 - jitter), delay * (1 + jitter)].
    jitter: float = 0.5
    # A Retry-After longer than this is not waited for: the call fails instead.
    max_retry_after: float = 600.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the delay before retry number `attempt` (1 for the first retry)."""
        base = min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread))


@dataclass(frozen=True)
class Failure:
    """What a caught exception means for a retry."""

    retriable: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None


def classify(error: BaseException) -> Failure:
    """Decide whether `error` from an HTTP call is worth retrying."""
    response = getattr(error, "response", None)
    if isinstance(error, requests.HTTPError) and response is not None:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if status == 429 else None
        return Failure(status in RETRIABLE_STATUS, f"HTTP {status}: {error}", status, retry_after)
    if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return Failure(True, f"{type(error).__name__}: {error}")
    if isinstance(error, (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError, ConnectionError, TimeoutError)):
        return Failure(True, f"{type(error).__name__}: {error}")
    return Failure(False, f"{type(error).__name__}: {error}")


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds a `Retry-After` header asks for (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def call_with_retry(
    func: Callable[[], T],
    *,
    action: str,
    policy: RetryPolicy,
    classify_error: Callable[[BaseException], Failure] = classify,
    before_retry: Callable[[Failure], T | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `func` until it succeeds, a failure is not retriable, or the attempts run out.

    `action` describes the call in log messages, for example "push of owner/slug".
    `before_retry` runs after a retriable failure and before the wait. It can return a result to
    end the retries with, which is how a caller recovers from a lost response to a request that
    the server did carry out (a push whose response was dropped).
    """
    attempt = 1
    while True:
        try:
            return func()
        except Exception as error:
            failure = classify_error(error)
            if not failure.retriable or attempt >= policy.attempts:
                if failure.retriable:
                    logger.warning("%s failed after %d attempts: %s", action, attempt, failure.reason)
                raise
            if failure.retry_after is not None and failure.retry_after > policy.max_retry_after:
                logger.warning("%s: the server requests a retry in %.0f s, longer than the %.0f s allowed", action, failure.retry_after, policy.max_retry_after)
                raise
            if before_retry is not None:
                recovered = before_retry(failure)
                if recovered is not None:
                    return recovered
            delay = policy.backoff(attempt)
            if failure.retry_after is not None:
                # Honour Retry-After as a minimum; a little jitter on top spreads out clients
                # that were all told the same moment.
                delay = failure.retry_after * (1.0 + random.uniform(0.0, 0.1))
            logger.info("%s failed (%s); retry %d of %d in %.1f s", action, failure.reason, attempt, policy.attempts - 1, delay)
            sleep(delay)
            attempt += 1
