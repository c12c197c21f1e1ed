"""``POST /admin/reload``: switch to the current model without a restart, for a credential with
the ``admin`` scope only (without one configured the route does not exist: 404, as an unknown
path)."""

import asyncio

from fastapi import APIRouter, HTTPException

from mlcycle.serve.core import Core, ModelInfo
from mlcycle.serve.http import AUTH_ERRORS, ERRORS, requires


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the admin route over ``core`` to ``routes`` (the app's router), when some
    credential holds the ``admin`` scope."""
    if not core.credentials.has_admin:
        return

    @routes.post(
        "/admin/reload",
        response_model=ModelInfo,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=requires(core.credentials, "admin"),
    )
    async def admin_reload() -> ModelInfo:
        """Load, verify and try the current model again, then switch to it between requests.
        The load runs in a thread: requests keep being answered by the old model meanwhile.
        Needs ``Authorization: Bearer <token>`` of a credential with the ``admin`` scope."""
        try:
            loaded = await asyncio.to_thread(core.reload, True)
        except (ValueError, OSError) as exc:
            raise HTTPException(
                409, f"reload refused, the current model keeps serving: {exc}"
            ) from exc
        return loaded.info
