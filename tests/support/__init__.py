"""Test support: a recording origin app, a gateway process fixture and raw HTTP/1.1 helpers."""
