"""Tiffany's benchmark suite against asyncio, uvloop, rloop, trio and gevent.

Run it with ``just bench`` (``just bench --quick`` for a short version), or
``python -m bench --help``. See ``bench/README.md``.
"""
