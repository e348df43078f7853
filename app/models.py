"""Imports every model so that Base.metadata knows the whole schema (Alembic autogenerate, checks)."""

from app.agreements.models import Agreement, Amendment
from app.api_keys.models import ApiKey, api_key_territories
from app.core.idempotency import IdempotencyRecord
from app.db import Base
from app.programmes.models import Programme
from app.territories.models import Territory, TerritoryAlias, TerritoryWord

metadata = Base.metadata

__all__ = [
    "Agreement",
    "Amendment",
    "ApiKey",
    "IdempotencyRecord",
    "Programme",
    "Territory",
    "TerritoryAlias",
    "TerritoryWord",
    "api_key_territories",
    "metadata",
]
