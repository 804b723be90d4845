"""Observers of the event stream: live progress, metrics, alerts."""
