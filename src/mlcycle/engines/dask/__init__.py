"""The Dask engine: every step on a Dask cluster, each data set a folder of Parquet parts.

One module per stage holds its partition code (:mod:`.gather`, :mod:`.validate`,
:mod:`.prepare`, :mod:`.train`, :mod:`.evaluate`), called by the stage's step module
(``mlcycle.engines.<stage>``) when the engine has a client; :mod:`.cluster` opens the client
and :mod:`.data` reads and writes partitioned data sets. Decisions that must not depend on how
rows are partitioned come from :func:`mlcycle.datasets.row_hash`.
"""
