"""Model adapters: one module per family, each registering its kinds with
:func:`mlcycle.models.register`. See :mod:`mlcycle.models` for the interface."""
