"""One small cache for what the app builds once per network and reuses on every
rerun: figures, the map of digits, evaluations of a network that was saved
without them. Shared by every session of the server (values must never be
modified by a reader), bounded (least recently used entries go first) and
thread-safe.

A key must change whenever what ``build`` would return changes: the app
uses a network's cache key (file path, modification time and size, or a
session run's identity).
"""

import threading
from collections import OrderedDict

__all__ = ["cached", "clear", "CACHE_ENTRIES"]

_cache = OrderedDict()
_cache_lock = threading.Lock()
_building = {}             # (kind, key) -> the lock held while that entry is built
CACHE_ENTRIES = 256


def cached(kind, key, build):
    """``build()``'s result, built once per ``(kind, key)`` and kept (LRU, bounded).

    ``key`` must change whenever what ``build`` would return changes (a
    network's cache key, a run's id). Threads asking for the same entry while it
    is being built wait for that build instead of starting their own: the first
    drawings of a class on a new network would otherwise each build its map of
    digits (1.7 s of CPU each, seen in the load test). If a build fails, the next
    caller builds again.
    """
    k = (kind, key)
    with _cache_lock:
        if k in _cache:
            _cache.move_to_end(k)
            return _cache[k]
        building = _building.setdefault(k, threading.Lock())
    with building:
        with _cache_lock:
            if k in _cache:  # built by the thread this one waited for
                _cache.move_to_end(k)
                return _cache[k]
        try:
            value = build()
        finally:
            with _cache_lock:
                if _building.get(k) is building:
                    del _building[k]
        with _cache_lock:
            _cache[k] = value
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
    return value


def clear():
    """Forget everything (tests)."""
    with _cache_lock:
        _cache.clear()
        _building.clear()
