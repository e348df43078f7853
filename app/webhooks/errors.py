"""Problem types of the webhooks domain."""

from app.core.problems import AppError, FieldError


class WebhookUrlNotAllowed(AppError):
    """The subscription's URL is not one the service may send to: not http(s), a name that does not
    resolve, or an address that is internal (loopback, private, link-local...) and not allowed by
    WEBHOOK_ALLOWED_NETWORKS."""

    status, code, title = 422, "webhook_url_not_allowed", "Webhook URL not allowed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer="/url", detail=detail)])


class SubscriptionDisabled(AppError):
    """A delivery of a disabled subscription cannot be retried: make the subscription active first."""

    status, code, title = 409, "webhook_subscription_disabled", "Webhook subscription disabled"
