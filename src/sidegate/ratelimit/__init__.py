"""Where rate-limit state lives: shared by the workers of a pod, or by every pod through Redis.

The decision itself is :class:`sidegate.policy.gcra.Gcra` (pure); this package keeps its state:
:class:`SharedTable` in a memory-mapped file shared by a pod's processes, :class:`RedisLimiter` in Redis
for a limit that holds across pods.
"""

from sidegate.policy.gcra import Decision, Gcra
from sidegate.ratelimit.redis import RedisLimiter, RedisUnavailable
from sidegate.ratelimit.shared import SharedTable

__all__ = ["Decision", "Gcra", "RedisLimiter", "RedisUnavailable", "SharedTable"]
