"""``POST /admin/reload``: switch to the current model without a restart, for the holder of
the admin token only (without one the route answers 404, as an unknown path)."""

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException

from mlcycle.serve.core import Core, ModelInfo
from mlcycle.serve.http import ERRORS


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the admin route over ``core`` to ``routes`` (the app's router)."""

    @routes.post("/admin/reload", response_model=ModelInfo, responses=ERRORS)
    async def admin_reload(authorization: Annotated[str | None, Header()] = None) -> ModelInfo:
        """Load, verify and try the current model again, then switch to it between requests.
        The load runs in a thread: requests keep being answered by the old model meanwhile.
        Off unless the service was started with an admin token (``MLCYCLE_ADMIN_TOKEN``)."""
        token = core.settings.admin_token
        if not token:
            raise HTTPException(404, "not found")
        # in constant time: how long a refusal takes says nothing of how much was right
        given = (authorization or "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, f"Bearer {token}".encode("latin-1", "replace")):
            raise HTTPException(401, "a valid 'Authorization: Bearer <token>' is required")
        try:
            loaded = await asyncio.to_thread(core.reload, True)
        except (ValueError, OSError) as exc:
            raise HTTPException(
                409, f"reload refused, the current model keeps serving: {exc}"
            ) from exc
        return loaded.info
