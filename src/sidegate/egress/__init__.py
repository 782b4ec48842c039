"""Egress: the app's outbound traffic under pod policy."""
