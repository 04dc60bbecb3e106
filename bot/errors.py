"""One exception tree whose leaves map to the failure kinds of the contract."""

from __future__ import annotations

from bot.models import FailureKind


class SoraError(Exception):
    """Base of every error the bot raises on purpose."""

    kind: FailureKind = FailureKind.GENERATION_FAILED
    retryable: bool = False

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message
        # provider-internal words: logs only, never a user's screen
        self.detail = detail or message

    def user_message(self) -> str:
        return self.message


class InvalidRequest(SoraError):
    """Bad user input: answered ephemerally, nothing stored."""

    kind = FailureKind.INVALID_REQUEST


class BudgetExceeded(SoraError):
    kind = FailureKind.INVALID_REQUEST

    def __init__(self, message: str, *, remaining_micros: int, scope: str = "user") -> None:
        super().__init__(message)
        self.remaining_micros = remaining_micros
        self.scope = scope  # "user" or "workspace": which limit was hit


class NotAllowed(SoraError):
    kind = FailureKind.INVALID_REQUEST


class Busy(InvalidRequest):
    """The request could not be stored in time for Slack's 3-second answer."""

    def __init__(self) -> None:
        super().__init__(
            "The bot is very busy right now and couldn't take your request in time. Nothing was "
            "stored or charged; please try again in a moment."
        )


class RequestsPaused(NotAllowed):
    """An admin paused new requests; running jobs continue."""


class ProviderError(SoraError):
    """Raised by adapters only, translated from HTTP and provider JSON at the edge."""

    # True when the provider surely did not create a job (safe to submit again)
    surely_not_created: bool = True

    def __init__(
        self,
        message: str = "",
        *,
        detail: str | None = None,
        reason: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.reason = reason
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    kind = FailureKind.PROVIDER_UNAVAILABLE
    retryable = True


class AmbiguousSubmit(ProviderUnavailable):
    """The request may have reached the provider (timeout after sending, 500/502/504)."""

    surely_not_created = False
    retryable = False


class RateLimited(ProviderError):
    kind = FailureKind.RATE_LIMITED
    retryable = True


class AuthFailed(ProviderError):
    kind = FailureKind.AUTH_FAILED


class QuotaExhausted(ProviderError):
    kind = FailureKind.QUOTA_EXHAUSTED


class ContentBlocked(ProviderError):
    def __init__(self, message: str = "", *, stage: str = "input", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.stage = stage
        self.kind = FailureKind.BLOCKED_INPUT if stage == "input" else FailureKind.BLOCKED_OUTPUT


class InvalidProviderRequest(ProviderError):
    kind = FailureKind.INVALID_REQUEST


class GenerationFailed(ProviderError):
    kind = FailureKind.GENERATION_FAILED


class ProviderRetired(ProviderError):
    kind = FailureKind.PROVIDER_RETIRED


class DeliveryError(SoraError):
    kind = FailureKind.DOWNLOAD_FAILED
    retryable = True


class ResultExpired(DeliveryError):
    kind = FailureKind.RESULT_EXPIRED
    retryable = False


class SlackRefused(SoraError):
    """Slack refused a message as invalid in every form we could send it (blocks, then plain text)."""

    kind = FailureKind.SLACK_REFUSED

    def __init__(self, error: str) -> None:
        super().__init__(f"Slack refused the message: {error}")
        self.error = error


def error_for_kind(kind: FailureKind, detail: str, *, reason: str | None = None) -> ProviderError:
    """Build the matching ProviderError for a kind read from a poll answer."""
    cls: dict[FailureKind, type[ProviderError]] = {
        FailureKind.RATE_LIMITED: RateLimited,
        FailureKind.AUTH_FAILED: AuthFailed,
        FailureKind.QUOTA_EXHAUSTED: QuotaExhausted,
        FailureKind.PROVIDER_UNAVAILABLE: ProviderUnavailable,
        FailureKind.INVALID_REQUEST: InvalidProviderRequest,
        FailureKind.PROVIDER_RETIRED: ProviderRetired,
    }
    if kind in (FailureKind.BLOCKED_INPUT, FailureKind.BLOCKED_OUTPUT):
        stage = "input" if kind is FailureKind.BLOCKED_INPUT else "output"
        return ContentBlocked(detail, stage=stage, detail=detail, reason=reason)
    return cls.get(kind, GenerationFailed)(detail, detail=detail, reason=reason)
