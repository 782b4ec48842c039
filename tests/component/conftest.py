"""Fixtures of the component tests (a real event loop, fake peers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.wired import Wire, wiring


@pytest.fixture
def wire() -> Iterator[Wire]:
    """``wire(**config)`` -> a gateway over fake transports (see :mod:`support.wired`)."""
    with wiring() as make:
        yield make
