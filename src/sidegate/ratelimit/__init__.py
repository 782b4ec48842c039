"""Where rate-limit state lives: shared by the workers of a pod, or by every pod through Redis.

The decision itself is :class:`sidegate.policy.gcra.Gcra` (pure); this package keeps its state:
:class:`~sidegate.ratelimit.shared.SharedTable` in a memory-mapped file shared by a pod's processes
(:mod:`~sidegate.ratelimit.local` decides a route's local limits in one compiled call), and
:class:`~sidegate.ratelimit.redis.RedisLimiter` in Redis for a limit that holds across pods.
Nothing is imported here: the Redis client needs asyncio, which `sidegate validate` never loads.
"""
