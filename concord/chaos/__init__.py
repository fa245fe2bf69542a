"""Chaos runs against a local cluster of real node processes (`python -m concord.chaos`)."""
