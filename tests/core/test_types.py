"""Shared field types hold for every input model, present and future: no `str` escapes `FreeText`."""

from __future__ import annotations

import types
import typing
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from app.core.types import NO_CONTROL_CHARACTERS, FreeText, Timestamp
from app.main import create_app
from tests.helpers import assert_problem


def _subclasses(base: type[BaseModel]) -> set[type[BaseModel]]:
    found = set()
    for sub in base.__subclasses__():
        found.add(sub)
        found |= _subclasses(sub)
    return found


def input_models() -> list[type[BaseModel]]:
    create_app()  # imports every router, hence every schema module
    return sorted(
        (
            m
            for m in _subclasses(BaseModel)
            if m.__module__.startswith("app.") and m.model_config.get("extra") == "forbid"
        ),
        key=lambda m: f"{m.__module__}.{m.__qualname__}",
    )


def _bare_strings(annotation: Any, metadata: list[Any]) -> list[str]:
    """The places in `annotation` where a `str` is not checked by NO_CONTROL_CHARACTERS."""
    if annotation is str:
        return [] if NO_CONTROL_CHARACTERS in metadata else ["str"]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _bare_strings(args[0], [*metadata, *args[1:]])
    # The members of `X | None` keep the field's validators; the items of `list[X]` do not.
    inherited = metadata if origin in (typing.Union, types.UnionType) else []
    return [bare for arg in args for bare in _bare_strings(arg, inherited)]


def test_the_walk_sees_every_domain() -> None:
    names = {m.__name__ for m in input_models()}
    assert {
        "TerritoryCreate",
        "ProgrammeUpdate",
        "AgreementTerminate",
        "AmendmentCreate",
        "ApiKeyCreate",
    } <= (names)


def test_the_walk_catches_a_bare_str() -> None:
    class Bad(BaseModel):
        name: str
        other: list[str] | None = None
        good: FreeText | None = None

    fields = Bad.model_fields
    assert _bare_strings(fields["name"].annotation, fields["name"].metadata) == ["str"]
    assert _bare_strings(fields["other"].annotation, fields["other"].metadata) == ["str"]
    assert _bare_strings(fields["good"].annotation, fields["good"].metadata) == []


@pytest.mark.parametrize("model", input_models(), ids=lambda m: m.__name__)
def test_every_string_of_an_input_model_is_free_text(model: type[BaseModel]) -> None:
    bare = [
        name
        for name, field in model.model_fields.items()
        if _bare_strings(field.annotation, list(field.metadata))
    ]
    assert not bare, f"{model.__name__}: use app.core.types.FreeText (or Code) for {bare}"


def test_every_request_body_is_an_input_model(app: FastAPI) -> None:
    """A request body model that does not forbid extra fields would escape the walk above."""
    names = {m.__name__ for m in input_models()}
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                ref = media["schema"].get("$ref", "")
                assert ref.rsplit("/", 1)[-1].removesuffix("-Input") in names, (method, path, ref)


@pytest.mark.parametrize("value", ["a\x00b", "a\nb", "tab\there", "\x7f", "a\u2028b", "\ud800"])
def test_free_text_refuses_control_characters(value: str) -> None:
    class Model(BaseModel):
        text: FreeText

    with pytest.raises(ValidationError):
        Model(text=value)
    assert Model(text="Métropole de Lyon – 69 ‘ok’").text


@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+23:59"],
)
def test_timestamps_out_of_range_in_utc_are_refused(value: str) -> None:
    class Model(BaseModel):
        at: Timestamp

    with pytest.raises(ValidationError):
        Model.model_validate_json(f'{{"at": "{value}"}}')
    assert Model.model_validate_json('{"at": "2999-12-31T23:59:59+01:00"}').at.year == 2999


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:00:00Z",
        "3000-01-01T00:00:00Z",
        "2999-12-31T23:59:59-00:01",
        "1899-12-31T23:59:59Z",
        "1900-01-01T00:30:00+01:00",
    ],
)
def test_timestamps_are_bounded(value: str) -> None:
    class Model(BaseModel):
        at: Timestamp

    with pytest.raises(ValidationError) as caught:
        Model.model_validate_json(f'{{"at": "{value}"}}')
    (error,) = caught.value.errors()
    assert error["type"] == "instant_out_of_range"
    assert error["msg"] == "must be an instant from 1900-01-01T00:00:00Z to 2999-12-31T23:59:59Z"
    for inside in ("1900-01-01T00:00:00Z", "2999-12-31T23:59:59.999999Z", "1900-01-01T01:00:00+01:00"):
        assert Model.model_validate_json(f'{{"at": "{inside}"}}').at.tzinfo is not None


# --- the cases, through the HTTP API ------------------------------------------------------


async def test_nul_in_api_key_name_and_overflowing_expiry(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/api-keys", json={"name": "a\u0000b", "role": "admin"}, headers=admin
    )
    assert_problem(response, 422, "validation_error", pointer="/name")
    for expires_at in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", "+10000-01-01T00:00:00Z"):
        response = await client.post(
            "/api/v1/api-keys", json={"name": "k", "role": "admin", "expires_at": expires_at}, headers=admin
        )
        assert_problem(response, 422, "validation_error", pointer="/expires_at")


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-11-26", 12])
def test_timestamps_are_rfc3339_not_numbers(value: object) -> None:
    class Model(BaseModel):
        at: Timestamp

    with pytest.raises(ValidationError):
        Model(at=value)
