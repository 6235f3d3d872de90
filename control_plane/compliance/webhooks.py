"""Violation webhooks: the body, its signature, one attempt at sending it, the retry delays.

A receiver (a SIEM, a pager) learns of a violation from a ``POST`` of a JSON body, signed
as Stripe and GitHub sign theirs: ``X-Sovereign-Signature: sha256=<hex>`` is
HMAC-SHA256, keyed with ``SOVEREIGN_VIOLATION_WEBHOOK_SECRET``, over the timestamp in
``X-Sovereign-Timestamp``, a dot, and the exact bytes of the body. The timestamp is in the
signed text, so a captured request cannot be replayed later under a fresh timestamp; the
receiver refuses old ones (docs/policy.md says how to check). The body is the stored
text, sent as it is, so what the delivery log shows is what was signed.

The sender is careful with a receiver it does not control: a short timeout, no redirects
followed (a 3xx is a failed attempt, not a trip to wherever it points), and at most
``MAX_ERROR_BYTES`` of an answer read (within the timeout), kept only to say why an
attempt failed; a 2xx answer's body is not read at all.
"""

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from control_plane.compliance.models import DueDelivery
from control_plane.domain.types import printable

#: Bytes of a failed answer's body that are read, and kept in ``last_error``.
MAX_ERROR_BYTES = 512
#: The longest ``last_error`` kept (the column refuses more).
MAX_ERROR_CHARS = 1000
#: The first retry waits this long; each one after waits twice as long as the one before.
FIRST_RETRY_SECONDS = 2.0
#: No wait between attempts is longer than this.
MAX_RETRY_SECONDS = 300.0

SIGNATURE_HEADER = "X-Sovereign-Signature"
TIMESTAMP_HEADER = "X-Sovereign-Timestamp"
DELIVERY_HEADER = "X-Sovereign-Delivery"
EVENT_HEADER = "X-Sovereign-Event"
#: The ``event`` of every violation webhook, also in its ``X-Sovereign-Event`` header.
VIOLATION_EVENT = "workload.violation"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Sovereign-Signature`` value: ``sha256=`` and the hex HMAC of ``ts.body``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: 2, 4, 8, ... up to 300."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went: delivered (a 2xx), or why not, with the status if one came."""

    delivered: bool
    status: int | None
    error: str | None = None


#: What the delivery service calls to send one claimed delivery.
Sender = Callable[[DueDelivery], Attempt]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class WebhookSender:
    """Sends deliveries to one URL, signed with one secret, over one HTTP client.

    ``clock`` gives the Unix time the signature is stamped with (``time.time``).
    Use as a context manager, so the client's connections are closed.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self._clock = clock
        self._timeout = timeout_seconds
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": "sovereign-compliance"},
        )

    def __enter__(self) -> "WebhookSender":
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def __call__(self, delivery: DueDelivery) -> Attempt:
        """POST the delivery's body once; never raises for what the receiver does."""
        body = delivery.body.encode("utf-8")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: VIOLATION_EVENT,
            DELIVERY_HEADER: str(delivery.id),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
        }
        # The timeout is per read: a receiver trickling its answer a byte at a time is cut
        # off at the deadline rather than read for as long as it likes.
        deadline = time.monotonic() + self._timeout
        try:
            with self._client.stream("POST", self.url, content=body, headers=headers) as answer:
                if answer.is_success:
                    return Attempt(True, answer.status_code)
                excerpt = b""
                for chunk in answer.iter_raw():
                    excerpt += chunk
                    if len(excerpt) >= MAX_ERROR_BYTES or time.monotonic() > deadline:
                        break
        except httpx.HTTPError as exc:
            return Attempt(False, None, _cut(f"{type(exc).__name__}: {exc}"))
        # Shown, not stored as sent: a NUL would make PostgreSQL refuse the delivery log's
        # update (and the delivery be retried forever), an ESC or U+202E forge what a
        # person reads back.
        text = printable(excerpt[:MAX_ERROR_BYTES].decode("utf-8", errors="replace"))
        why = "redirect not followed" if answer.is_redirect else f"HTTP {answer.status_code}"
        return Attempt(False, answer.status_code, _cut(f"{why}: {text}" if text else why))
