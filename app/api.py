"""The /api/v1 routers: every domain router, in the order the app matches them."""

from __future__ import annotations

from app.agreements.router import router as agreements_router
from app.api_keys.router import me_router
from app.api_keys.router import router as api_keys_router
from app.audit.router import router as audit_router
from app.changes.router import router as changes_router
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

# In the order they are matched. Each router is declared with its whole prefix and the caller's check
# (`app.core.routers.api_router`), and the app serves its routes as they are: nothing is included.
API_ROUTERS = [
    territories_router,
    programmes_router,
    agreements_router,
    positions_router,
    counsellors_router,
    assignments_router,
    workshops_router,
    personal_data_router,
    stats_router,
    changes_router,
    referentials_router,
    opendata_router,
    api_keys_router,
    me_router,
    audit_router,
    webhooks_router,
]
