"""Metrics, logs and the access record of each request."""
