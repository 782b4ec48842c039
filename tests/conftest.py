"""Shared fixtures: the recording origin app, Sidegate processes, raw-socket helpers.

Fixture API (names are stable; other suites reuse them):

``origin``            the recording origin (one process per session), reset before the test.
``origin_server``     the same process without the reset (for module-scoped fixtures).
``gateway``           factory: ``gateway(routes=..., limits=..., forwarded=..., upstreams=...,
                      mutate=fn, log_level=..., **top_level_keys) -> GatewayProcess``; the
                      default config sends everything to the origin. Stopped with SIGTERM at
                      the end of the test, which asserts exit code 0 within 30 s.
``gateway_module``    the same factory, module-scoped (share one gateway between many tests).
``send_raw``          ``send_raw(port, data, read_timeout=2.0) -> bytes`` (read until close/silence).
``free_port``         ``free_port() -> int``.

See ``tests/support/gateway.py`` for :class:`GatewayFactory` (the type of ``gateway``),
:class:`GatewayProcess` (``.port .admin_port .config_path .proc .pid .log() .url(path)
.write_config(dict) .metric(name, **labels) .rss_kib() .stop()``), :class:`OriginProcess`
(``.port .address .reset() .received() .all_bytes() .state() .wait_for(n)``), :class:`RawClient`,
:func:`parse_responses` / :func:`parse_one`, and the request builders ``get``, ``request``, ``chunked``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidegate.native import stale_extensions
from support.gateway import GatewayFactory, OriginProcess
from support.gateway import free_port as _free_port
from support.gateway import send_raw as _send_raw


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_extensions()
    if stale:  # the compiled module would run, not the source under test
        pytest.exit(f"compiled modules older than their source: {', '.join(stale)}; run `make install`", 2)


@pytest.fixture(scope="session")
def origin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    origin = OriginProcess(tmp_path_factory.mktemp("origin"))
    yield origin
    origin.stop()


@pytest.fixture
def origin(origin_server: OriginProcess) -> OriginProcess:
    origin_server.reset()
    return origin_server


@pytest.fixture
def gateway(tmp_path: Path, origin_server: OriginProcess) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path, origin_server)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def gateway_module(
    tmp_path_factory: pytest.TempPathFactory, origin_server: OriginProcess
) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path_factory.mktemp("gateway"), origin_server)
    yield factory
    factory.close()


@pytest.fixture
def send_raw() -> Callable[..., bytes]:
    return _send_raw


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


# The Redis fixture comes last, with its import, so the fixtures above stay as they are.
from support.redis import INSTALL_HINT, RedisServer, find_redis_server  # noqa: E402


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free 127.0.0.1 port, no persistence, in a temporary directory.

    Yields a :class:`support.redis.RedisServer` (``.url .port .stop() .start() .pause() .resume()
    .command(*args)``), stopped after the test. Never skipped: without Debian's redis-server the
    test fails and says how to install it.
    """
    binary = find_redis_server()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
