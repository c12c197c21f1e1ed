"""``POST /admin/reload``: switch to the current model without a restart, for the holder of
the admin token only (without one the route answers 404, as an unknown path)."""

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException

from mlcycle.serve.core import Core, ModelInfo
from mlcycle.serve.http import ERRORS


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the admin route over ``core`` to ``routes`` (the app's router)."""

    @routes.post("/admin/reload", response_model=ModelInfo, responses=ERRORS)
    async def admin_reload(authorization: Annotated[str | None, Header()] = None) -> ModelInfo:
        """Load and verify the current model again and switch to it between requests. Off
        unless the service was started with an admin token (``MLCYCLE_ADMIN_TOKEN``)."""
        token = core.settings.admin_token
        if not token:
            raise HTTPException(404, "not found")
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "a valid 'Authorization: Bearer <token>' is required")
        try:
            return core.reload(touch=True).info
        except HTTPException:
            raise
        except (ValueError, OSError) as exc:
            raise HTTPException(
                409, f"reload refused, the current model keeps serving: {exc}"
            ) from exc
