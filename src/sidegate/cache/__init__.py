"""The shared response cache: an LMDB store in the cache directory, shared with the app.

Sidegate's workers and the application open the same directory (a volume both containers
mount, ideally ``medium: Memory``). Sidegate stores and serves responses under RFC 9111 rules;
the app reads, writes and purges the same entries with :class:`~sidegate.cache.client.SharedCache`
(Python) or with any LMDB binding, following docs/cache-layout.md.

Modules:

- ``entry``   :class:`Entry`, one stored response, and its byte layout
- ``keys``    URL normalisation and the key formats (primary, Vary variant, index keys)
- ``store``   :class:`Store`: lookup / store / invalidate / purge, with LRU eviction
- ``writer``  every change inside one write transaction, indexes and totals kept consistent
- ``env``     the LMDB environment: opened once per process, reopened after fork
- ``layout``  the environment's named databases, which ``env`` opens and ``writer`` changes
- ``client``  the app's side: :class:`SharedCache`, no network and no server import

Nothing is imported here: LMDB is loaded only by a process whose config caches (import the
modules: :mod:`sidegate.cache.store`, :mod:`sidegate.cache.client`...).
"""
