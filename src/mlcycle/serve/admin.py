"""``POST /admin/reload``: switch to the current model without a restart, for a credential with
the ``admin`` scope only (without one configured the route does not exist: 404, as an unknown
path)."""

import asyncio

from fastapi import APIRouter, HTTPException

from mlcycle.serve.core import Core, ServedInfo
from mlcycle.serve.http import AUTH_ERRORS, ERRORS, requires


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the admin route over ``core`` to ``routes`` (the app's router), when some
    credential holds the ``admin`` scope."""
    if not core.credentials.has_admin:
        return

    @routes.post(
        "/admin/reload",
        response_model=ServedInfo,
        response_model_exclude_unset=True,
        responses={**ERRORS, **AUTH_ERRORS},
        dependencies=requires(core.credentials, "admin"),
    )
    async def admin_reload() -> ServedInfo:
        """Load, verify and try the current models again (production, and the challenger if
        one is released), then switch to them between requests. The load runs in a thread:
        requests keep being answered by the old models meanwhile. Answers production's
        identity and, under ``challenger``, the challenger's with its stage and share.
        Needs ``Authorization: Bearer <token>`` of a credential with the ``admin`` scope."""
        try:
            served = await asyncio.to_thread(core.reload, True)
        except (ValueError, OSError) as exc:
            raise HTTPException(
                409, f"reload refused, the current models keep serving: {exc}"
            ) from exc
        return served.info
