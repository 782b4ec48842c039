"""Partial responses (206) in the store: pieces of a representation, joined as they arrive.

RFC 9111 3.3 lets a cache keep an incomplete response and use it for a later request whose range
lies wholly within it; 3.4 lets it combine pieces that share a strong validator and, once they
cover every byte, serve the whole. A piece is an ordinary entry value (layout in
sidegate.cache.entry, status 206, its ``Content-Range`` in the head) under its own key::

    entry key + 0x00 + u64be(first byte)

so it shares the variant's prefix: invalidation, purges, quotas, LRU eviction and the tags index
treat it like any entry, and the app's client (which reads entry keys only) never meets one.

The pieces of one variant are kept disjoint and apart: a new piece takes in every stored piece
it overlaps or touches (:func:`~sidegate.policy.cache_ranges.join_pieces`), so any range the
cache can answer lies within one piece. Pieces of another representation (another strong
validator or complete length), or without a strong validator, are never joined: a new piece
replaces them. When the joined piece covers the whole representation it is stored as the 200
entry of the variant, and the pieces go. A variant that already has its full entry takes no
piece (the entry answers every range).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from sidegate.cache.entry import CorruptEntry, Entry
from sidegate.cache.keys import (
    MAX_KEY,
    VARIANT_SEP,
    decode_vary,
    encode_vary,
    key_partition,
    secondary_key,
    tag_key,
)
from sidegate.cache.writer import ACCESS
from sidegate.http.messages import Headers
from sidegate.policy.cache_ranges import Span, content_range, join_pieces, strong_validator

if TYPE_CHECKING:
    from sidegate.cache.env import Env
    from sidegate.cache.layout import Databases
    from sidegate.cache.writer import Txn, Writer

PIECE_KEY_EXTRA: Final = 9  # 0x00 + u64be(first) after the entry key
_U64BE: Final = struct.Struct(">Q")
_TOUCH_EVERY_MS: Final = 1000  # as sidegate.cache.store moves an entry it serves


def piece_key(key: bytes, first: int) -> bytes:
    """The key of the piece of entry ``key`` that starts at byte ``first``."""
    return key + VARIANT_SEP + _U64BE.pack(first)


def span(piece: Entry) -> Span | None:
    """(first, last, complete length) of a stored piece, from its Content-Range."""
    for name, value in piece.headers:
        if name.lower() == b"content-range":
            return content_range(value)
    return None


def stored_pieces(env: Env, primary: bytes, request_headers: Headers, ms: int) -> list[Entry]:
    """The pieces stored for the request's variant of ``primary``, by first byte; each is
    moved in the LRU index as read at ``ms`` (queued, at most once a second, as a hit does)."""
    if len(primary) >= MAX_KEY:
        return []
    with env.transaction(write=False) as txn:
        names = txn.get(primary, db=env.variants)
        if names is None:
            return []
        key = primary + VARIANT_SEP + secondary_key(decode_vary(bytes(names)), request_headers)
        found = read_pieces(env, txn, key)
        for found_key, _ in found:
            access = txn.get(found_key, db=env.access)
            if access is not None and ms - ACCESS.unpack(access)[0] >= _TOUCH_EVERY_MS:
                env.touch(found_key, ms)
    return [piece for _, piece in found]


def write_piece(
    writer: Writer,
    primary: bytes,
    vary: tuple[bytes, ...],
    request_headers: Headers,
    piece: Entry,
    *,
    quota: int | None,
    max_size: int,
) -> Entry | None:
    """Store ``piece`` for the variant of ``primary`` the request selects (as Store.store keys
    it), then evict as a store does: what was written (see :func:`put_piece`), or None."""
    names = tuple(name.lower() for name in vary)
    key = primary + VARIANT_SEP + secondary_key(names, request_headers)
    prefix = key_partition(key)
    if len(key) + PIECE_KEY_EXTRA > MAX_KEY or any(len(tag_key(prefix, tag)) > MAX_KEY for tag in piece.tags):
        return None
    limit = max_size if quota is None else min(quota, max_size)
    written = put_piece(writer, primary, key, vary=encode_vary(names), piece=piece, limit=limit)
    if written is None:
        return None
    if quota is not None:
        writer.evict_partition(prefix, quota, keep=written[0])
    writer.evict_all(max_size, keep=written[0])
    return written[1]


def read_pieces(env: Databases, txn: Txn, key: bytes) -> list[tuple[bytes, Entry]]:
    """The pieces stored for entry ``key``, by first byte (a damaged value is skipped)."""
    start = key + VARIANT_SEP
    out: list[tuple[bytes, Entry]] = []
    with txn.cursor(env.entries) as cur:
        if cur.set_range(start):
            for found, raw in cur.iternext():
                if found[: len(start)] != start:
                    break
                if len(found) == len(start) + 8:
                    try:
                        out.append((bytes(found), Entry.decode(raw)))
                    except CorruptEntry:
                        continue
    return out


def put_piece(
    writer: Writer, primary: bytes, key: bytes, *, vary: bytes, piece: Entry, limit: int
) -> tuple[bytes, Entry] | None:
    """Store ``piece`` (a 206 of entry ``key``), joined with the stored pieces it meets: the key
    and entry written (a piece, or the whole 200), or None when nothing was (a full entry is
    stored, the piece has no usable Content-Range, or the result exceeds ``limit`` bytes)."""
    txn, env = writer.txn, writer.env
    mine = span(piece)
    if mine is None:
        return None
    first, _, complete = mine
    old_vary = txn.get(primary, db=env.variants)
    same_vary = old_vary is not None and bytes(old_vary) == vary
    if same_vary and txn.get(key, db=env.entries) is not None:
        return None
    validator = strong_validator(piece.headers)
    mates: list[tuple[bytes, int, bytes]] = []
    for stored_key, stored in read_pieces(env, txn, key) if same_vary else []:
        theirs = span(stored)
        if theirs is None or theirs[2] != complete or validator is None:
            writer.delete_entry(stored_key)  # cannot be joined: this piece replaces it
        elif strong_validator(stored.headers) != validator:
            writer.delete_entry(stored_key)  # another representation
        else:
            mates.append((stored_key, theirs[0], stored.body))
    start, body, taken = join_pieces([(at, data) for _, at, data in mates], first, piece.body)
    for index in taken:
        writer.delete_entry(mates[index][0])
    fields = [(name, value) for name, value in piece.headers if name.lower() != b"content-range"]
    if start == 0 and len(body) == complete:
        written, out = key, _like(piece, 200, fields, body)
    else:
        fields.append((b"Content-Range", b"bytes %d-%d/%d" % (start, start + len(body) - 1, complete)))
        written, out = piece_key(key, start), _like(piece, 206, fields, body)
    value = out.encode()
    if len(written) + len(value) > limit:
        return None
    ms = int(out.response_time * 1000)
    writer.put_entry(primary, written, vary=vary, value=value, tags=out.tags, ms=ms)
    return written, out


def _like(piece: Entry, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> Entry:
    """An entry with ``piece``'s freshness numbers, flags and tags (it is the newest response)."""
    return Entry.build(
        status,
        fields,
        body,
        response_time=piece.response_time,
        initial_age=piece.initial_age,
        freshness=piece.freshness,
        stale_while_revalidate=piece.stale_while_revalidate,
        stale_if_error=piece.stale_if_error,
        flags=piece.flags,
        tags=piece.tags,
    )
