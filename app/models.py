"""Imports every model so that Base.metadata knows the whole schema (Alembic autogenerate, checks)."""

from app.api_keys.models import ApiKey, api_key_territories
from app.core.idempotency import IdempotencyRecord
from app.db import Base
from app.territories.models import Territory

metadata = Base.metadata

__all__ = ["ApiKey", "IdempotencyRecord", "Territory", "api_key_territories", "metadata"]
