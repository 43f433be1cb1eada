"""The use cases: get a clip (cache, cut, store), clean up on source events, and the seek index's life (kept,
shared by a lease, built at upload).

May import ``ops``, ``stores``, ``audio`` and the kernel; never ``web`` or ``wiring``.
"""
