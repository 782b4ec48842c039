"""Authentication helpers that do I/O: where keys and secrets come from, kept fresh without a restart.

The decisions themselves are pure and live in :mod:`sidegate.policy` (e.g. :mod:`sidegate.policy.jwt`).
"""
