"""Parallel writers on one programme never take it past its target or its budget, a programme lowered while
agreements are created never ends below what they commit, and a territory cannot vanish under a draft.

The races run through an app of its own, one connection per request, with committed transactions (the
rollback-per-test fixtures share one connection, so nothing there can race). On PostgreSQL the writers meet
on the programme's row lock; on SQLite they queue on BEGIN IMMEDIATE: the same outcomes hold on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.agreements import service as agreements
from app.agreements.models import AgreementKind
from app.agreements.schemas import AgreementCreate
from app.config import Settings
from app.core.auth import Principal, Role
from app.core.problems import UnknownReference
from app.programmes import service as programmes
from app.programmes.schemas import ProgrammeCreate
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.errors import TerritoryInUse
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate
from tests.agreements.helpers import (
    AGREEMENTS,
    PROGRAMME,
    PROGRAMMES,
    World,
    amend,
    committed_rows,
    committed_world,
    create_agreement,
    create_programme,
    get_programme,
    merge_patch,
    post_agreement,
    terminate,
)
from tests.conftest import Tree, postgres_only
from tests.helpers import assert_problem, backend_pid, wait_until_blocked

SUBSIDY = 5_000_000
WRITERS = 8
OPERATOR = Principal(role=Role.admin, name="concurrency test")


@pytest.fixture
async def world(settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    async with committed_world(settings, engine) as world:
        yield world


async def _programme(world: World, code: str, positions_target: int, **changes: Any) -> str:
    programme = await create_programme(
        world.client,
        world.admin,
        code=code,
        positions_target=positions_target,
        budget_cents=positions_target * SUBSIDY,
        subsidy_per_position_cents=SUBSIDY,
        **changes,
    )
    return str(programme["id"])


def _draft(world: World, programme_id: str, reference: str, positions: int, **changes: Any) -> Any:
    return post_agreement(
        world.client,
        world.admin,
        programme_id,
        world.territory_id,
        reference=reference,
        positions_granted=positions,
        **changes,
    )


def _created(responses: list[httpx.Response], status: int = 201) -> list[dict[str, Any]]:
    return [r.json() for r in responses if r.status_code == status]


async def _assert_totals(world: World, programme_id: str, positions: int, subsidy_cents: int) -> None:
    """The programme's totals are these, and are exactly the sums of its live agreements."""
    programme = await get_programme(world.client, programme_id)
    assert (programme["positions_granted"], programme["subsidy_committed_cents"]) == (
        positions,
        subsidy_cents,
    )
    assert programme["positions_granted"] <= programme["positions_target"]
    assert programme["subsidy_committed_cents"] <= programme["budget_cents"]
    listed = await world.client.get(
        AGREEMENTS, params={"programme_id": programme_id, "limit": 200}, headers=world.admin
    )
    live = [a for a in listed.json()["items"] if a["status"] != "terminated"]
    assert sum(a["positions_granted"] for a in live) == positions
    assert sum(a["subsidy_total_cents"] for a in live) == subsidy_cents


async def test_parallel_writers_never_push_a_programme_past_its_target(world: World) -> None:
    programme_id = await _programme(world, "TARGET_RACE", 10)

    # Each draft alone fits (3 of 10 positions); together they would take 24.
    creations = await asyncio.gather(*(_draft(world, programme_id, f"C-{i}", 3) for i in range(WRITERS)))
    created = _created(creations)
    assert len(created) == 3, [r.text for r in creations]
    for response in creations:
        if response.status_code != 201:
            body = assert_problem(response, 409, "programme_positions_exceeded")
            assert body["positions_available"] == 1
    await _assert_totals(world, programme_id, 9, 9 * SUBSIDY)

    # Signing does not move the totals: every signature succeeds.
    signatures = await asyncio.gather(
        *(
            world.client.post(
                f"{AGREEMENTS}/{a['id']}/sign", json={"signed_on": "2021-03-01"}, headers=world.admin
            )
            for a in created
        )
    )
    assert [r.status_code for r in signatures] == [200, 200, 200]

    # One position is left: of the parallel amendments adding one each, exactly one gets it.
    additions = await asyncio.gather(
        *(amend(world.client, world.admin, a["id"], "add_positions", 1) for a in created for _ in range(2))
    )
    assert sorted(r.status_code for r in additions) == [201] + [409] * 5, [r.text for r in additions]
    for response in additions:
        if response.status_code != 201:
            assert assert_problem(response, 409, "programme_positions_exceeded")["positions_available"] == 0
    await _assert_totals(world, programme_id, 10, 10 * SUBSIDY)

    # Parallel drafts of 2 while a termination frees the first agreement's positions (3, or 4 if it won
    # the amendment): a draft that runs before the termination finds no room, after it at most
    # `freed // 2` fit, and every refusal is for want of room.
    first = await world.client.get(f"{AGREEMENTS}/{created[0]['id']}", headers=world.admin)
    freed = first.json()["positions_granted"]
    assert freed in (3, 4)
    results = await asyncio.gather(
        terminate(world.client, world.admin, created[0]["id"], terminated_on="2022-01-01"),
        *(_draft(world, programme_id, f"D-{i}", 2) for i in range(4)),
    )
    assert results[0].status_code == 200, results[0].text
    drafts = results[1:]
    drafted = len(_created(drafts))
    for response in drafts:
        if response.status_code != 201:
            body = assert_problem(response, 409, "programme_positions_exceeded")
            assert body["positions_available"] in (0, 1)
    assert drafted <= freed // 2
    positions = 10 - freed + 2 * drafted
    await _assert_totals(world, programme_id, positions, positions * SUBSIDY)


async def test_signatures_racing_changes_and_terminations_of_the_same_drafts(world: World) -> None:
    """Signing locks only its agreement; a change or a termination locks the programme, then the agreement.
    Racing on the same drafts, every request ends as in some order of one after the other: no deadlock,
    no lost write, totals intact."""
    programme_id = await _programme(world, "SIGN_RACE", 100)
    drafts = [(await _draft(world, programme_id, f"S-{i}", 2)).json() for i in range(6)]

    def sign(agreement_id: str) -> Any:
        return world.client.post(
            f"{AGREEMENTS}/{agreement_id}/sign", json={"signed_on": "2021-03-01"}, headers=world.admin
        )

    calls = []
    for draft in drafts:
        url = f"{AGREEMENTS}/{draft['id']}"
        calls += [
            sign(draft["id"]),
            merge_patch(world.client, world.admin, url, {"positions_granted": 3}, if_match="*"),
            sign(draft["id"]),
        ]
    calls += [terminate(world.client, world.admin, d["id"], terminated_on="2022-01-01") for d in drafts[:3]]
    results = await asyncio.gather(*calls)

    positions = 0
    for i, draft in enumerate(drafts):
        first, patch, second = results[3 * i : 3 * i + 3]
        signatures = [r for r in (first, second) if r.status_code == 200]
        refused = [r for r in (first, second) if r.status_code != 200]
        current = (await world.client.get(f"{AGREEMENTS}/{draft['id']}", headers=world.admin)).json()
        # The patch ran before the first signature (3 positions) or found it signed (2).
        if patch.status_code == 200:
            assert patch.json()["positions_granted"] == 3
        else:
            assert_problem(patch, 409, "agreement_not_editable")
        assert current["positions_granted"] == (3 if patch.status_code == 200 else 2)
        for response in refused:
            assert_problem(response, 409, "invalid_transition")
        if i < 3:
            terminated = results[3 * len(drafts) + i]
            assert terminated.status_code == 200, terminated.text
            assert current["status"] == "terminated"
            # A signature after the termination is refused: at most one of the two succeeded.
            assert len(signatures) <= 1
        else:
            assert current["status"] == "signed"
            assert len(signatures) == 1
            assert signatures[0].json()["version"] <= current["version"]
            positions += current["positions_granted"]
        for signed in signatures:
            assert signed.json()["status"] == "signed"
            assert signed.json()["signed_on"] == "2021-03-01"
    await _assert_totals(world, programme_id, positions, positions * SUBSIDY)


async def test_parallel_drafts_stop_at_the_budget_when_it_binds_before_the_target(world: World) -> None:
    # Room for 10 positions at the programme's subsidy; these drafts pay twice as much per position, so the
    # budget is spent after 2 of them (4 positions), long before the target.
    programme_id = await _programme(world, "BUDGET_RACE", 10)
    per_position = 2 * SUBSIDY
    responses = await asyncio.gather(
        *(
            _draft(world, programme_id, f"B-{i}", 2, subsidy_per_position_cents=per_position)
            for i in range(WRITERS)
        )
    )
    assert len(_created(responses)) == 2, [r.text for r in responses]
    for response in responses:
        if response.status_code != 201:
            body = assert_problem(response, 409, "programme_budget_exceeded")
            assert body["budget_available_cents"] == 10 * SUBSIDY - 2 * 2 * per_position
    await _assert_totals(world, programme_id, 4, 2 * 2 * per_position)


async def _lower_while_drafting(
    world: World, code: str, if_match: str, patch_first: bool
) -> tuple[str, httpx.Response, int]:
    """A programme of 10 positions, 4 of them granted; then, together, a PATCH lowering the target to 6 and
    4 drafts of 2 positions, the PATCH sent first or last (which tends to decide who gets the programme's
    lock first; both outcomes are checked either way). Returns the programme, the PATCH's answer, and how
    many drafts were created; every refused draft is `programme_positions_exceeded`."""
    programme_id = await _programme(world, code, 10)
    await create_agreement(
        world.client, world.admin, programme_id, world.territory_id, reference="BASE", positions_granted=4
    )
    url = f"{PROGRAMMES}/{programme_id}"
    if if_match == "etag":
        if_match = (await world.client.get(url)).headers["etag"]
    patch = merge_patch(world.client, world.admin, url, {"positions_target": 6}, if_match=if_match)
    drafts = [_draft(world, programme_id, f"L-{i}", 2) for i in range(4)]
    results = await asyncio.gather(*([patch, *drafts] if patch_first else [*drafts, patch]))
    patched, drafted = (results[0], results[1:]) if patch_first else (results[-1], results[:-1])
    for response in drafted:
        if response.status_code != 201:
            assert_problem(response, 409, "programme_positions_exceeded")
    return programme_id, patched, len(_created(drafted))


@pytest.mark.parametrize("patch_first", [True, False], ids=["patch_sent_first", "patch_sent_last"])
async def test_lowering_the_target_while_drafts_are_created_with_the_etag_read_before(
    world: World, patch_first: bool
) -> None:
    programme_id, patched, drafted = await _lower_while_drafting(
        world, "LOWER_WITH_ETAG", "etag", patch_first
    )
    programme = await get_programme(world.client, programme_id)
    if patched.status_code == 200:
        # The PATCH took the programme first (no draft had committed: its ETag was current), and 4 ≤ 6;
        # then the drafts shared the 2 positions left.
        assert patched.json()["positions_target"] == programme["positions_target"] == 6
        assert drafted == 1
    else:
        # A draft committed first and moved the programme's version: the ETag read before is stale (never
        # `programme_below_committed`: with a current ETag nothing had been added), and nothing of the PATCH
        # applies. The drafts fill the old target.
        assert_problem(patched, 412, "precondition_failed")
        assert programme["positions_target"] == 10
        assert drafted == 3
    await _assert_totals(world, programme_id, 4 + 2 * drafted, (4 + 2 * drafted) * SUBSIDY)


@pytest.mark.parametrize("patch_first", [True, False], ids=["patch_sent_first", "patch_sent_last"])
async def test_lowering_the_target_with_if_match_star_while_drafts_are_created(
    world: World, patch_first: bool
) -> None:
    # `If-Match: *` applies the PATCH to whatever version it finds: what decides is what is committed then.
    programme_id, patched, drafted = await _lower_while_drafting(world, "LOWER_ANY_VERSION", "*", patch_first)
    programme = await get_programme(world.client, programme_id)
    if patched.status_code == 200:
        # At most one draft ran before it (4 + 2 ≤ 6); after it, none fits beside that one.
        assert programme["positions_target"] == 6
        assert drafted == 1
    else:
        # Two or three drafts ran before it: 8 or 10 positions granted, above 6. The target stays 10 and
        # the drafts fill it.
        body = assert_problem(patched, 409, "programme_below_committed")
        assert body["positions_granted"] in (8, 10)
        assert programme["positions_target"] == 10
        assert drafted == 3
    await _assert_totals(world, programme_id, 4 + 2 * drafted, (4 + 2 * drafted) * SUBSIDY)


# --- a territory deleted under a draft -----------------------------------------------------------------


@pytest.mark.parametrize("write", ["create", "patch"])
async def test_a_territory_deleted_right_after_its_check_is_422_unknown_reference(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
) -> None:
    programme = await create_programme(client, admin)
    draft = await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=10)

    async def delete_territory(session: Any, territory_id: Any) -> None:
        # Another transaction deletes the territory (and commits) before the territory is locked.
        await session.execute(
            delete(Territory).where(Territory.id == territory_id).execution_options(synchronize_session=False)
        )

    def deleted_right_after(real: Any) -> Any:
        async def check(session: Any, territory_id: Any, principal: Principal) -> Any:
            territory = await real(session, territory_id, principal)
            await delete_territory(session, territory_id)
            return territory

        return check

    real_checks = agreements.repo.creation_checks

    async def deleted_before_checks(
        session: Any, principal: Principal, programme_id: Any, territory_id: Any, reference: str
    ) -> Any:
        await delete_territory(session, territory_id)
        return await real_checks(session, principal, programme_id, territory_id, reference)

    # A change checks its territory with `get_in_scope`, then locks it. A creation checks and locks it in
    # one statement under the programme's lock (a DELETE from another transaction then waits for the draft:
    # the PostgreSQL tests below), so the territory can only go before that statement.
    monkeypatch.setattr(territories, "get_in_scope", deleted_right_after(territories.get_in_scope))
    monkeypatch.setattr(agreements.repo, "creation_checks", deleted_before_checks)
    if write == "create":
        response = await post_agreement(
            client, admin, programme["id"], tree.villeurbanne.id, reference="V", positions_granted=5
        )
    else:
        response = await merge_patch(
            client, admin, f"{AGREEMENTS}/{draft['id']}", {"territory_id": str(tree.villeurbanne.id)}
        )
    assert_problem(response, 422, "unknown_reference", "/territory_id")
    assert (await get_programme(client, programme["id"]))["positions_granted"] == 10


def _territory_then_draft(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Pauses agreements.create after its territory check, before its INSERT: returns (paused, resume)."""
    paused, resume = asyncio.Event(), asyncio.Event()
    real = agreements.repo.insert_agreement

    async def pausing(*args: Any, **kwargs: Any) -> None:
        paused.set()
        await resume.wait()
        await real(*args, **kwargs)

    monkeypatch.setattr(agreements.repo, "insert_agreement", pausing)
    return paused, resume


async def _territory_and_programme(session: AsyncSession) -> tuple[Territory, str]:
    territory = await territories.create(
        session, TerritoryCreate(kind=TerritoryKind.region, code="98", name="Doomed")
    )
    programme = await programmes.create(
        session, ProgrammeCreate.model_validate({**PROGRAMME, "code": "DOOM"})
    )
    await session.commit()
    return territory, str(programme.id)


def _agreement(programme_id: str, territory: Territory) -> AgreementCreate:
    return AgreementCreate.model_validate(
        {
            "programme_id": programme_id,
            "territory_id": str(territory.id),
            "kind": AgreementKind.convention,
            "reference": "DOOM-1",
            "positions_granted": 5,
            "starts_on": "2021-03-01",
        }
    )


@postgres_only
async def test_a_territory_checked_by_a_draft_cannot_be_deleted_before_the_draft_commits(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused, resume = _territory_then_draft(monkeypatch)
    async with committed_rows(engine) as sessions:
        async with sessions() as setup:
            territory, programme_id = await _territory_and_programme(setup)
        async with sessions() as creator, sessions() as deleter:

            async def create() -> None:
                await agreements.create(creator, _agreement(programme_id, territory), OPERATOR)
                await creator.commit()

            creating = asyncio.create_task(create())
            await paused.wait()
            doomed = await deleter.get_one(Territory, territory.id)
            pid = await backend_pid(deleter)
            deleting = asyncio.create_task(territories.delete(deleter, doomed))
            try:
                # The check's FOR KEY SHARE holds the DELETE back...
                await wait_until_blocked(deleter, pid, deleting)
            finally:
                resume.set()
                await creating
            # ...until the draft commits: the DELETE then meets the draft's reference.
            with pytest.raises(TerritoryInUse):
                await deleting
            await deleter.rollback()


@postgres_only
async def test_a_draft_for_a_territory_being_deleted_is_unknown_reference_once_the_delete_commits(
    engine: AsyncEngine,
) -> None:
    async with committed_rows(engine) as sessions:
        async with sessions() as setup:
            territory, programme_id = await _territory_and_programme(setup)
        async with sessions() as creator, sessions() as deleter:
            await territories.delete(deleter, await deleter.get_one(Territory, territory.id))
            # The DELETE is not committed: the plain scope check still sees the territory; the lock waits.
            pid = await backend_pid(creator)
            creating = asyncio.create_task(
                agreements.create(creator, _agreement(programme_id, territory), OPERATOR)
            )
            await wait_until_blocked(creator, pid, creating)
            await deleter.commit()
            with pytest.raises(UnknownReference):
                await creating
            await creator.rollback()
