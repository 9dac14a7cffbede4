"""crux_gen's store backends (``stores.memory``, ``stores.sqlite``).

This top-level package name is fixed by crux_gen's design; everything in it
belongs to crux_gen and implements the narrow protocol in ``stores.base``.
"""
