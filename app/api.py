"""The /api/v1 router: every domain router, behind the shared request checks."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.agreements.router import router as agreements_router
from app.api_keys.router import me_router
from app.api_keys.router import router as api_keys_router
from app.audit.router import router as audit_router
from app.changes.router import router as changes_router
from app.core.auth import get_principal
from app.counsellors.router import router as counsellors_router
from app.opendata.router import router as opendata_router
from app.personal_data.router import router as personal_data_router
from app.positions.router import assignments_router
from app.positions.router import router as positions_router
from app.programmes.router import router as programmes_router
from app.referentials.router import router as referentials_router
from app.stats.router import router as stats_router
from app.territories.router import router as territories_router
from app.webhooks.router import router as webhooks_router
from app.workshops.router import router as workshops_router

# Every route checks its query parameters and resolves the caller (`get_principal`), so that an invalid key
# is 401 even where no key is needed.
api_router = APIRouter(prefix="/api/v1", dependencies=[Depends(get_principal)])
api_router.include_router(territories_router)
api_router.include_router(programmes_router)
api_router.include_router(agreements_router)
api_router.include_router(positions_router)
api_router.include_router(counsellors_router)
api_router.include_router(assignments_router)
api_router.include_router(workshops_router)
api_router.include_router(personal_data_router)
api_router.include_router(stats_router)
api_router.include_router(changes_router)
api_router.include_router(referentials_router)
api_router.include_router(opendata_router)
api_router.include_router(api_keys_router)
api_router.include_router(me_router)
api_router.include_router(audit_router)
api_router.include_router(webhooks_router)
