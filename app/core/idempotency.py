"""Idempotency-Key: replay the first response of a POST, stored in the same transaction as its write.

A stored response never outlives the data it shows: a producer names the objects whose personal data its
response shows (`Idempotency.shows`), and erasing them (`forget`, in the erasure's transaction) wipes every
stored response that shows them. The key then stays known until it expires, so that a retry answers 410
`idempotency_key_erased` rather than the erased data, or a second execution that would create the person
again."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core import audit
from app.core.auth import PrincipalDep
from app.core.problems import AppError
from app.db import Base, SessionDep, new_id, utcnow

MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# Headers of the first response that a replay repeats.
_REPLAYED_HEADERS = ("location", "etag", "content-type")


class IdempotencyKeyReused(AppError):
    """This Idempotency-Key was used with another request body: use a new key."""

    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class IdempotencyKeyInUse(AppError):
    """A request with this Idempotency-Key is still running: retry when it has completed."""

    status, code, title = 409, "idempotency_key_in_use", "Idempotency key in use"


class IdempotencyKeyErased(AppError):
    """The response of this Idempotency-Key showed personal data that has since been erased: it cannot be
    replayed, and the request is not run again under this key."""

    status, code, title = 410, "idempotency_key_erased", "Idempotency key erased"


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("caller", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    caller: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column()
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Set when a person the response showed was erased: the response (and the fingerprint of the request,
    # a hash of the person's data) is gone, the key is remembered until it expires.
    erased_at: Mapped[datetime | None] = mapped_column(default=None)


class IdempotencySubject(Base):
    """An object whose personal data a stored response shows (`resource` as in the change feed)."""

    __tablename__ = "idempotency_subjects"
    __table_args__ = (Index("ix_idempotency_subjects_subject", "subject_id", "resource"),)

    record_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("idempotency_keys.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_KEY_LENGTH,
        min_length=1,
        description="Makes a retry safe: the same key with the same body within the retention window "
        "(24 h unless configured otherwise) replays the first response (`Idempotent-Replayed: true`); "
        "with another body → 422 `idempotency_key_reused`; once personal data that the response showed has "
        "been erased (an anonymised counsellor) → 410 `idempotency_key_erased`, with any body.",
    ),
]


def advisory_lock_id(caller: str, key: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit integer) that serialises one caller's uses of one key."""
    return int.from_bytes(hashlib.sha256(f"{caller}|{key}".encode()).digest()[:8], "big", signed=True)


@dataclass
class Idempotency:
    session: AsyncSession
    caller: str
    key: str | None
    fingerprint: str
    ttl: timedelta
    subjects: set[tuple[str, uuid.UUID]] = field(default_factory=set)

    def shows(self, resource: str, *ids: uuid.UUID) -> None:
        """The response being produced shows these objects' personal data: erasing one of them
        (`forget`) erases the stored response."""
        if self.key is not None:
            self.subjects.update((resource, id) for id in ids)

    async def run(
        self, produce: Callable[[], Awaitable[Response]], *, secret_fields: tuple[str, ...] = ()
    ) -> Response:
        """Replays a stored response for this key, or produces one and stores it before commit.

        `secret_fields` of the response body (an API key's secret) are stored as null: a secret is shown
        once, and never kept in clear, so a replay answers without it."""
        if self.key is None:
            return await produce()
        await self._lock(self.key)
        now = utcnow()
        # Expired records of this caller go as it writes; `purge_expired` clears the rest at start-up.
        await self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.caller == self.caller, IdempotencyRecord.created_at <= now - self.ttl
            )
        )
        existing = (
            await self.session.execute(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.caller == self.caller, IdempotencyRecord.key == self.key
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            if existing.erased_at is not None:
                raise IdempotencyKeyErased(
                    "the response of this Idempotency-Key showed personal data that has since been erased, "
                    "so it cannot be replayed; use a new key for a new request"
                )
            if existing.fingerprint != self.fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for another request; use a new key for a new request"
                )
            await self._journal_replay(existing.id)
            headers = dict(existing.headers)
            headers[REPLAYED_HEADER] = "true"
            return Response(content=existing.body, status_code=existing.status_code, headers=headers)
        response = await produce()
        body = bytes(response.body) if hasattr(response, "body") else b""
        if secret_fields and body:
            document = json.loads(body)
            document.update(dict.fromkeys(secret_fields))
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        kept = {k: v for k, v in response.headers.items() if k.lower() in _REPLAYED_HEADERS}
        record = IdempotencyRecord(
            caller=self.caller,
            key=self.key,
            fingerprint=self.fingerprint,
            status_code=response.status_code,
            headers=kept,
            body=body,
            created_at=now,
        )
        self.session.add(record)
        await self.session.flush()
        if self.subjects:
            await self.session.execute(
                insert(IdempotencySubject),
                [
                    {"record_id": record.id, "resource": resource, "subject_id": subject_id}
                    for resource, subject_id in sorted(self.subjects, key=str)
                ],
            )
        return response

    async def _journal_replay(self, record_id: uuid.UUID) -> None:
        """A replay shows again the people its response showed (`shows`): its journal line
        (`app.core.audit`), in the replay's transaction."""
        subjects = (
            await self.session.execute(
                select(IdempotencySubject.resource, IdempotencySubject.subject_id).where(
                    IdempotencySubject.record_id == record_id
                )
            )
        ).all()
        for resource in sorted({row.resource for row in subjects}):
            await audit.record_read(
                self.session,
                resource=resource,
                subject_ids=[row.subject_id for row in subjects if row.resource == resource],
            )

    async def _lock(self, key: str) -> None:
        """On PostgreSQL a second request with the same key, while the first is uncommitted, gets 409.

        SQLite transactions are serialised by BEGIN IMMEDIATE, so there is never a first in flight."""
        bind = self.session.get_bind()
        if bind.dialect.name != "postgresql":
            return
        lock_id = advisory_lock_id(self.caller, key)
        got = (
            await self.session.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": lock_id})
        ).scalar()
        if not got:
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being processed; retry after it completes",
                headers={"Retry-After": "1"},
            )


async def get_idempotency(
    request: Request, session: SessionDep, principal: PrincipalDep, key: IdempotencyKeyHeader = None
) -> Idempotency:
    ttl = timedelta(hours=request.app.state.settings.idempotency_ttl_hours)
    if key is None:
        # Nothing will be stored or compared: spare large bodies (a bulk upsert) the canonical hash.
        return Idempotency(session, principal.caller, None, "", ttl)
    body = await request.body()
    try:
        canonical: Any = json.loads(body) if body else None
        material = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        # Not JSON, too deep, a number too long: the raw bytes identify the request; validation refuses it.
        material = body
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    digest.update(material)
    caller = principal.caller
    if principal.is_anonymous:
        # Callers without a key are told apart by address, so that nobody replays another's response.
        caller = f"public:{request.client.host if request.client else 'unknown'}"
    return Idempotency(session, caller, key, digest.hexdigest(), ttl)


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]


async def forget(session: AsyncSession, resource: str, subject_id: uuid.UUID) -> int:
    """Erases every stored response that shows this object (call it in the transaction that erases the
    object's personal data); returns how many. Their keys answer 410 `idempotency_key_erased` until they
    expire."""
    return await forget_many(session, resource, [subject_id])


async def forget_many(session: AsyncSession, resource: str, subject_ids: Sequence[uuid.UUID]) -> int:
    """`forget` for several objects at once (a retention purge): one statement."""
    if not subject_ids:
        return 0
    shown = select(IdempotencySubject.record_id).where(
        IdempotencySubject.resource == resource, IdempotencySubject.subject_id.in_(subject_ids)
    )
    result = await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id.in_(shown), IdempotencyRecord.erased_at.is_(None))
        .values(erased_at=utcnow(), fingerprint="", status_code=410, headers={}, body=b"")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def purge_expired(session: AsyncSession, ttl: timedelta) -> int:
    """Deletes the records older than the TTL; returns how many."""
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - ttl)
    )
    return int(getattr(result, "rowcount", 0) or 0)
