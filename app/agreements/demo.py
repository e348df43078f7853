"""Demo data of the programme's launch: France Relance and the first conventions with Lyon and the Rhône.

The positions and amounts are the published ones (50 000 € per position; Métropole de Lyon 50 positions,
2.5 M€; département du Rhône 15 positions, 750 000 €). The signature and start dates are illustrative: the
programme launched in 2021, and its end date is left open."""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements import service as agreements
from app.agreements.models import AgreementKind
from app.agreements.schemas import AgreementCreate, AgreementSign
from app.core.auth import Principal, Role
from app.programmes import service as programmes
from app.programmes.schemas import ProgrammeCreate
from app.territories.models import Territory

OPERATOR = Principal(role=Role.admin, name="demo")

# (territory (kind, code), reference, positions)
CONVENTIONS = [
    (("metropole", "200046977"), "CONV-2021-69M-001", 50),
    (("departement", "69"), "CONV-2021-69D-001", 15),
]


async def load(session: AsyncSession, by_code: dict[tuple[str, str], Territory]) -> str:
    programme = await programmes.create(
        session,
        ProgrammeCreate(
            code="FRANCE_RELANCE_V1",
            name="France Relance – Conseillers numériques France Services",
            positions_target=4000,
            budget_cents=25_000_000_000,
            subsidy_per_position_cents=5_000_000,
            starts_on=date(2021, 1, 1),
        ),
    )
    for territory_key, reference, positions in CONVENTIONS:
        created = await agreements.create(
            session,
            AgreementCreate(
                programme_id=programme.id,
                territory_id=by_code[territory_key].id,
                kind=AgreementKind.convention,
                reference=reference,
                positions_granted=positions,
                starts_on=date(2021, 3, 1),
            ),
            OPERATOR,
        )
        agreement = await agreements.lock_for_signature(session, created["id"], OPERATOR)
        await agreements.sign(session, agreement, AgreementSign(signed_on=date(2021, 3, 1)))
    return f"1 programme, {len(CONVENTIONS)} signed agreements"
