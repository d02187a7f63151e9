"""Delivery: every message Lifeline sends leaves through the outbox, off the request path."""
