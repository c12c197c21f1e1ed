"""Names that several modules share, in a module that imports nothing beyond the standard library.

A stage lists every module it imports in its ``deps`` (dvc.yaml), so a constant that lives in
a heavy module (pandas, a database driver) would tie that module's changes to every stage that
only needs the name. Here it costs nothing: this file changes when a shared name does.
"""

from __future__ import annotations

# The column that records which source (``data.sources[].name``) each snapshot row came from;
# the by-source split reads it, and it is never a feature.
SOURCE_COLUMN = "_source"
# The environment variable holding the service's admin (reload) token: `mlcycle serve` reads it,
# `mlcycle retrain --service` and `mlcycle release --service` send it. (bandit B105, a
# hard-coded password: it is a variable's name, not a token.)
ADMIN_TOKEN_ENV = "MLCYCLE_ADMIN_TOKEN"  # nosec B105
