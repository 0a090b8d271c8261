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
CACHE_ENTRIES = 256


def cached(kind, key, build):
    """``build()``'s result, built once per ``(kind, key)`` and kept (LRU, bounded).

    ``key`` must change whenever what ``build`` would return changes (a
    network's cache key, a run's id). Two threads asking at once may both
    build; both get a correct result.
    """
    k = (kind, key)
    with _cache_lock:
        if k in _cache:
            _cache.move_to_end(k)
            return _cache[k]
    value = build()
    with _cache_lock:
        _cache[k] = value
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return value


def clear():
    """Forget everything (tests)."""
    with _cache_lock:
        _cache.clear()
