"""Model adapters: the interface (:mod:`mlcycle.adapters.base`) and one module per family;
:mod:`mlcycle.models` registers their kinds."""
