"""crux_gen's store backends: ``crux_gen.stores.memory``, ``crux_gen.stores.sqlite``.

The repository folder ``stores/`` is installed as this subpackage, never as a
top-level ``stores`` package (that name belongs to users' own code). Every
store implements the protocols in ``crux_gen.stores.base``.
"""
