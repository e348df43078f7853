"""Demo workshops: a dozen upcoming sessions in Lyon and the Rhône on the programme's five launch themes
(DOMAIN.md), some nearly full, and the last four months' history (held workshops with their activity
report, one cancelled) so that the statistics have figures to show. Venues and addresses are illustrative;
the registrants are invented people with @example.org addresses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal, Role
from app.core.pagination import Cursors, PageRequest
from app.positions import service as positions
from app.referentials.data import AgeBracket, Level, SocialStatus, Theme
from app.workshops import service
from app.workshops.models import WorkshopFormat
from app.workshops.schemas import (
    AttendanceItem,
    AttendanceReport,
    RegistrationCreate,
    Venue,
    WalkIns,
    WorkshopCancel,
    WorkshopCreate,
    WorkshopUpdate,
)

OPERATOR = Principal(role=Role.admin, name="demo")

# Contacting relatives, a CV, children's schooling, personal data, checking information.
RELATIVES = [Theme.reseaux_sociaux]
CV = [Theme.insertion_professionnelle]
SCHOOLING = [Theme.scolarite_et_numerique, Theme.parentalite]
PERSONAL_DATA = [Theme.securite_numerique]
INFORMATION = [Theme.culture_numerique]

VENUES = {
    "part_dieu": Venue(
        name="Bibliothèque municipale de la Part-Dieu",
        address="30 boulevard Marius Vivier Merle",
        postcode="69003",
        commune_code="69123",
        lat=45.7606,
        lon=4.8593,
    ),
    "croix_rousse": Venue(
        name="Mairie du 4e arrondissement",
        address="133 boulevard de la Croix-Rousse",
        postcode="69004",
        commune_code="69123",
        lat=45.7745,
        lon=4.8277,
    ),
    "villeurbanne": Venue(
        name="Maison du livre, de l'image et du son",
        address="247 cours Émile Zola",
        postcode="69100",
        commune_code="69266",
        lat=45.7660,
        lon=4.8795,
    ),
    "villefranche": Venue(
        name="Médiathèque Pierre-Mendès-France",
        address="2 rue Pierre Morin",
        postcode="69400",
        commune_code="69264",
        lat=45.9871,
        lon=4.7191,
    ),
    "tarare": Venue(
        name="Médiathèque de Tarare",
        address="Place de la République",
        postcode="69170",
        commune_code="69243",
        lat=45.8966,
        lon=4.4334,
    ),
}

# (position, title, themes, level, venue or None for remote, days ahead, hour UTC, capacity, waitlist,
#  registrations to make)
WORKSHOPS: list[tuple[str, str, list[Theme], Level, str | None, int, int, int, int, int]] = [
    (
        "LYON-CNFS-001",
        "Garder le contact en visio avec ses proches",
        RELATIVES,
        Level.debutant,
        "part_dieu",
        3,
        8,
        10,
        5,
        9,
    ),
    (
        "LYON-CNFS-001",
        "Rédiger son CV et sa lettre de motivation",
        CV,
        Level.debutant,
        "part_dieu",
        5,
        13,
        12,
        4,
        12,
    ),
    (
        "LYON-CNFS-001",
        "Protéger ses données personnelles en ligne",
        PERSONAL_DATA,
        Level.intermediaire,
        "croix_rousse",
        8,
        8,
        15,
        5,
        4,
    ),
    (
        "LYON-CNFS-001",
        "Vérifier une information avant de la partager",
        INFORMATION,
        Level.debutant,
        "croix_rousse",
        12,
        13,
        15,
        0,
        2,
    ),
    (
        "LYON-CNFS-002",
        "Suivre la scolarité de ses enfants (Pronote, ENT)",
        SCHOOLING,
        Level.debutant,
        "villeurbanne",
        4,
        16,
        8,
        3,
        7,
    ),
    (
        "LYON-CNFS-002",
        "Postuler en ligne : les sites d'offres d'emploi",
        CV,
        Level.intermediaire,
        "villeurbanne",
        9,
        8,
        10,
        5,
        3,
    ),
    (
        "LYON-CNFS-002",
        "Messageries et réseaux sociaux : premiers pas",
        RELATIVES,
        Level.debutant,
        None,
        6,
        17,
        20,
        0,
        5,
    ),
    (
        "RHONE-CNFS-001",
        "Créer son adresse e-mail et écrire à ses proches",
        RELATIVES,
        Level.debutant,
        "villefranche",
        5,
        8,
        8,
        2,
        8,
    ),
    (
        "RHONE-CNFS-001",
        "Mots de passe et arnaques : se protéger",
        PERSONAL_DATA,
        Level.debutant,
        "villefranche",
        11,
        13,
        12,
        4,
        6,
    ),
    (
        "RHONE-CNFS-001",
        "Espace numérique de travail du collège",
        SCHOOLING,
        Level.debutant,
        "villefranche",
        15,
        16,
        10,
        0,
        1,
    ),
    (
        "RHONE-CNFS-002",
        "Repérer les fausses informations",
        INFORMATION,
        Level.intermediaire,
        "tarare",
        7,
        13,
        12,
        3,
        11,
    ),
    ("RHONE-CNFS-002", "Mettre son CV en ligne", CV, Level.debutant, "tarare", 14, 8, 10, 2, 0),
]

FIRST_NAMES = ["Alex", "Camille", "Charlie", "Dominique", "Lou", "Sacha", "Maxime", "Noa", "Andrea", "Jo"]


async def _position_id(session: AsyncSession, external_ref: str) -> uuid.UUID:
    page = PageRequest(limit=1, cursor=None, include_total=False, binding="demo", cursors=Cursors("demo"))
    found, _cursor, _total = await positions.list_positions(
        session, OPERATOR, page, external_ref=external_ref
    )
    position_id: uuid.UUID = found[0]["id"]
    return position_id


async def load(session: AsyncSession) -> str:
    today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    registrations = 0
    for index, (ref, title, themes, level, venue, days, hour, capacity, waitlist, people) in enumerate(
        WORKSHOPS
    ):
        starts_at = (today + timedelta(days=days)).replace(hour=hour)
        place = VENUES[venue] if venue is not None else None
        remote = place is None
        workshop = await service.create(
            session,
            WorkshopCreate(
                position_id=await _position_id(session, ref),
                title=title,
                themes=themes,
                level=level,
                format=WorkshopFormat.remote if remote else WorkshopFormat.in_person,
                venue=place,
                online_url="https://visio.example.org/atelier-reseaux-sociaux" if remote else None,
                starts_at=starts_at,
                duration_minutes=90 if index % 2 else 120,
                capacity=capacity,
                waitlist_capacity=waitlist,
            ),
            OPERATOR,
        )
        for n in range(people):
            first_name = FIRST_NAMES[(index + n) % len(FIRST_NAMES)]
            person = RegistrationCreate(
                first_name=first_name,
                last_name="Exemple",
                email=f"{first_name.lower()}.exemple.{index}.{n}@example.org",
            )
            await service.register(session, workshop.id, person, OPERATOR)
            registrations += 1
    held, cancelled = await _history(session, today)
    return (
        f"{len(WORKSHOPS)} upcoming workshops with {registrations} registrations; "
        f"{held} held and {cancelled} cancelled in the last four months"
    )


# The history: (position, venue) pairs taking turns, a workshop a week each over the last 16 weeks.
HISTORY = [
    ("LYON-CNFS-001", "part_dieu"),
    ("LYON-CNFS-002", "villeurbanne"),
    ("RHONE-CNFS-001", "villefranche"),
    ("RHONE-CNFS-002", "tarare"),
]
HISTORY_WEEKS = 16
AGES = list(AgeBracket)
SOCIALS = list(SocialStatus)
ATTENDANCE_CYCLE = ["present", "present", "present", "absent", "present", "excused", "present"]


async def _history(session: AsyncSession, today: datetime) -> tuple[int, int]:
    """Workshops of the last weeks, as they would have been lived: created while upcoming, registered to,
    then (once started) their activity report recorded: present or absent registrants, some walk-ins.
    Deterministic: the same figures on every load (the counts vary from one workshop to the next so that the
    statistics show both large and small cells)."""
    held = cancelled = 0
    themes = [RELATIVES, CV, SCHOOLING, PERSONAL_DATA, INFORMATION]
    for week in range(HISTORY_WEEKS):
        for slot, (ref, venue) in enumerate(HISTORY):
            index = week * len(HISTORY) + slot
            workshop = await service.create(
                session,
                WorkshopCreate(
                    position_id=await _position_id(session, ref),
                    title=f"Atelier numérique n° {index + 1}",
                    themes=themes[index % len(themes)],
                    level=Level.debutant if index % 3 else Level.intermediaire,
                    format=WorkshopFormat.in_person,
                    venue=VENUES[venue],
                    starts_at=today + timedelta(days=1),
                    duration_minutes=120,
                    capacity=12,
                    waitlist_capacity=0,
                ),
                OPERATOR,
            )
            workshop_id = workshop.id
            people = 4 + (index * 5) % 9
            ids = []
            for n in range(people):
                first_name = FIRST_NAMES[(index + n) % len(FIRST_NAMES)]
                row, _token = await service.register(
                    session,
                    workshop_id,
                    RegistrationCreate(
                        first_name=first_name,
                        last_name="Exemple",
                        email=f"{first_name.lower()}.historique.{index}.{n}@example.org",
                        # Mostly older people, as in the programme's reports; some leave it blank.
                        age_bracket=AGES[(index + 2 * n) % 4 + 3] if n % 5 else None,
                        social_status=SOCIALS[(index + n) % 2 + 2] if n % 4 else None,
                    ),
                    OPERATOR,
                )
                ids.append(row.id)
            # Registrations change the row behind the ORM's back (Core statements): read it again.
            session.expire(workshop)
            workshop = await service.get_for_change(session, workshop_id, OPERATOR)
            starts_at = (today - timedelta(days=7 * (HISTORY_WEEKS - week) - slot)).replace(hour=9)
            workshop = await service.update(session, workshop, WorkshopUpdate(starts_at=starts_at))
            if index % 17 == 5:
                await service.cancel(session, workshop, WorkshopCancel(reason="Intervenant absent."))
                cancelled += 1
                continue
            walk_ins = index % 3
            report = AttendanceReport(
                registrations=[
                    AttendanceItem(id=rid, attendance=ATTENDANCE_CYCLE[(index + n) % len(ATTENDANCE_CYCLE)])
                    for n, rid in enumerate(ids)
                ],
                walk_ins=WalkIns(
                    total=walk_ins,
                    age_brackets={AgeBracket.soixante_dix_plus: walk_ins} if walk_ins else {},
                    social_statuses={SocialStatus.retraite: walk_ins} if walk_ins else {},
                ),
            )
            await service.record_attendance(session, workshop, report)
            held += 1
    return held, cancelled
