"""Demo positions, counsellors and assignments under the Lyon and Rhône conventions.

Every person here is invented and says so: "Exemple", "Fictif", "Modèle", "Illustratif", "Démo" names,
@example.org addresses and 00 00 phone numbers. The positions, contracts and dates are illustrative."""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements import service as agreements
from app.core.auth import Principal, Role
from app.counsellors import service as counsellors
from app.counsellors.schemas import CounsellorCreate, Training
from app.positions import service as positions
from app.positions.schemas import AssignmentCreate, AssignmentEnd, PositionCreate
from app.referentials.data import ContractType, EndReason, PositionTypology, TrainingLabel
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory

OPERATOR = Principal(role=Role.admin, name="demo")
LYON_METRO = ("metropole", "200046977")
RHONE = ("departement", "69")

# (employer, external_ref, first name, last name, training label, hours, PIX level)
PEOPLE = [
    (LYON_METRO, "MATRICULE-0001", "Camille", "Exemple", TrainingLabel.CCP2_CCP3, 280, 2),
    (LYON_METRO, "MATRICULE-0002", "Dominique", "Fictif", TrainingLabel.CCP1, 105, 1),
    (LYON_METRO, "MATRICULE-0003", "Alex", "Modèle", TrainingLabel.CCP2, 175, 2),
    (RHONE, "RH-69-0001", "Sacha", "Illustratif", TrainingLabel.CCP2_CCP3, 350, 3),
    (RHONE, "RH-69-0002", "Lou", "Démo", None, None, None),
]

# (agreement reference, position external_ref, territory (kind, code), typology)
POSITIONS = [
    ("CONV-2021-69M-001", "LYON-CNFS-001", ("commune", "69123"), PositionTypology.conum),
    ("CONV-2021-69M-001", "LYON-CNFS-002", ("commune", "69266"), PositionTypology.conum),
    ("CONV-2021-69M-001", "LYON-CNFS-003", LYON_METRO, PositionTypology.coordinateur),
    ("CONV-2021-69D-001", "RHONE-CNFS-001", ("commune", "69264"), PositionTypology.conum),
    ("CONV-2021-69D-001", "RHONE-CNFS-002", RHONE, PositionTypology.conum),
]

# (position, counsellor, contract, started_on, ended_on and reason or None)
ASSIGNMENTS: list[tuple[str, str, ContractType, date, tuple[date, EndReason] | None]] = [
    (
        "LYON-CNFS-003",
        "MATRICULE-0003",
        ContractType.CDD,
        date(2021, 5, 3),
        (date(2022, 10, 31), EndReason.demission),
    ),
    ("LYON-CNFS-001", "MATRICULE-0001", ContractType.CDD, date(2021, 5, 3), None),
    ("LYON-CNFS-002", "MATRICULE-0002", ContractType.CDI, date(2021, 6, 1), None),
    ("RHONE-CNFS-001", "RH-69-0001", ContractType.PEC, date(2021, 9, 1), None),
]


async def load(session: AsyncSession, by_code: dict[tuple[str, str], Territory]) -> str:
    """Loads the demo positions; `by_code` holds the territories the demo already resolved, the others (the
    communes of the positions) are read from the referential."""
    by_code = dict(by_code)
    for _, _, territory, _ in POSITIONS:
        if territory not in by_code:
            by_code[territory] = await territories.get_by_code(
                session, TerritoryKind(territory[0]), territory[1]
            )
    people = {}
    for employer, ref, first_name, last_name, label, hours, pix in PEOPLE:
        people[ref] = await counsellors.create(
            session,
            CounsellorCreate(
                territory_id=by_code[employer].id,
                external_ref=ref,
                first_name=first_name,
                last_name=last_name,
                email=f"{first_name}.{last_name}@example.org".lower().replace("è", "e").replace("é", "e"),
                phone="+33 4 00 00 00 0" + ref[-1],
                training=Training(label=label, hours=hours, pix_level=pix) if label else None,
            ),
            OPERATOR,
        )
    posts = {}
    for reference, ref, territory, typology in POSITIONS:
        agreement = await agreements.get_by_reference(session, reference)
        assert agreement is not None, reference
        posts[ref] = await positions.create(
            session,
            PositionCreate(
                agreement_id=agreement.id,
                territory_id=by_code[territory].id,
                external_ref=ref,
                typology=typology,
                opened_on=date(2021, 4, 1),
            ),
            OPERATOR,
        )
    for position, person, contract, started_on, end in ASSIGNMENTS:
        assignment = await positions.assign(
            session,
            posts[position].id,
            AssignmentCreate(counsellor_id=people[person].id, contract_type=contract, started_on=started_on),
            OPERATOR,
        )
        if end is not None:
            await positions.end(
                session, assignment.id, AssignmentEnd(ended_on=end[0], end_reason=end[1]), OPERATOR
            )
    return f"{len(POSITIONS)} positions, {len(PEOPLE)} fictitious counsellors, {len(ASSIGNMENTS)} assignments"
