"""What ``sidegate inject`` adds, as one frozen value: image, ports, mode, resources, sizes.

The defaults are those of ``deploy/base`` (the manifests a platform engineer reads first), so an
injected workload and the base Deployment carry the same sidecar. ``--config FILE`` reads a
Sidegate config (:mod:`sidegate.inject.configured`) to size the cache volume from
``cache.max_size`` and the pod's grace period from the drain settings; without it the config
defaults are assumed (256 MiB cache, 5 s + 20 s drain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sidegate import __version__
from sidegate.config.grace import grace_seconds

Mode = Literal["native", "classic"]

MiB: Final = 1 << 20

CONTAINER_NAME: Final = "sidegate"
DEFAULT_IMAGE: Final = f"localhost/sidegate:{__version__}"
DEFAULT_CONFIG_MAP: Final = "sidegate"
INBOUND_PORT: Final = 8080
HEALTH_PORT: Final = 9902
ADMIN_PORT: Final = 9901  # loopback only, but it still takes the port in the pod's network namespace
CONFIG_DIR: Final = "/etc/sidegate"
CACHE_DIR: Final = "/var/cache/sidegate"
PODINFO_DIR: Final = "/etc/podinfo"
RUN_AS: Final = 65532  # the image's user and group `sidegate`
# The config's defaults (held equal to the model's by tests/unit/test_inject.py).
DEFAULT_CACHE_MAX_SIZE: Final = 256 * MiB
DEFAULT_DRAIN_DELAY: Final = 5.0
DEFAULT_DRAIN_TIMEOUT: Final = 20.0
# Kubernetes' default terminationGracePeriodSeconds, and the seconds left to the app on top of
# Sidegate's drain (in native mode the app stops first, inside the same grace period).
KUBERNETES_DEFAULT_GRACE: Final = 30
APP_STOP_ALLOWANCE: Final = 5


@dataclass(frozen=True)
class Sizing:
    """What the sidecar needs from its config: the cache size and the drain it does on SIGTERM."""

    cache_max_size: int = DEFAULT_CACHE_MAX_SIZE
    drain_delay: float = DEFAULT_DRAIN_DELAY
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT

    @property
    def grace_seconds(self) -> int:
        """The pod's ``terminationGracePeriodSeconds`` that lets the app stop and Sidegate drain."""
        return max(KUBERNETES_DEFAULT_GRACE, grace_seconds(self) + APP_STOP_ALLOWANCE)


@dataclass(frozen=True)
class InjectOptions:
    """Everything ``sidegate inject`` decides with: one value passed to every document."""

    image: str = DEFAULT_IMAGE
    config_map: str = DEFAULT_CONFIG_MAP
    port: int = INBOUND_PORT
    health_port: int = HEALTH_PORT
    admin_port: int = ADMIN_PORT
    app_port: int | None = None  # only for advice: where the app should listen (127.0.0.1)
    mode: Mode = "native"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "1"
    memory_limit: str = ""  # "" = 256Mi plus the cache volume (its pages count against Sidegate)
    sizing: Sizing = Sizing()

    @property
    def sidecar_ports(self) -> dict[int, str]:
        """Ports Sidegate takes in the pod, by number, with what each is for."""
        return {self.port: "inbound", self.health_port: "health", self.admin_port: "admin (loopback)"}


class InjectError(Exception):
    """What ``sidegate inject`` cannot do, said so that the user knows the fix (never a traceback)."""
