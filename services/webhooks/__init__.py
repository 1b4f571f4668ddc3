"""Webhooks: subscriptions' filters, Standard Webhooks signing, the dispatcher and the sender."""
