"""Webhooks: subscriptions to the change feed, delivered by a worker under the Standard Webhooks spec."""
