"""A platform's node: lookup, change stream, webhooks, metrics, doctor, threatexchange."""
