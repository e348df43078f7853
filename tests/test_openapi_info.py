"""The OpenAPI document's `info` (licence, contact, a description of what exists) and the examples a
generated client or a reader of /docs sees for /readyz's 503."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.config import Settings
from app.main import create_app
from app.ops.router import Readiness

ROOT = Path(__file__).resolve().parents[1]


def _document(settings: Settings) -> dict:  # type: ignore[type-arg]
    return create_app(settings).openapi()


def test_the_licence_is_the_package_s_and_its_text_ships(settings: Settings) -> None:
    package = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    licence = _document(settings)["info"]["license"]
    assert licence == {"name": "European Union Public Licence 1.2", "identifier": "EUPL-1.2"}
    assert package["license"] == {"text": licence["identifier"]}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("EUROPEAN UNION PUBLIC LICENCE v. 1.2\nEUPL © the European Union 2007, 2016\n")
    # Its 15 articles and the appendix of compatible licences, whole.
    for heading in ("1.Definitions", "15.Applicable Law", "Appendix"):
        assert heading in text
    assert text.rstrip().endswith(
        "All other changes or additions to this Appendix require the production of a new EUPL version."
    )


def test_the_contact_comes_from_the_settings(settings: Settings) -> None:
    assert _document(settings)["info"]["contact"] == {"name": "cnfs-api"}
    configured = settings.model_copy(
        update={
            "contact_name": "Équipe cnfs-api",
            "contact_url": "https://support.example.fr/cnfs",
            "contact_email": "cnfs-api@example.fr",
        }
    )
    assert _document(configured)["info"]["contact"] == {
        "name": "Équipe cnfs-api",
        "url": "https://support.example.fr/cnfs",
        "email": "cnfs-api@example.fr",
    }


@pytest.mark.parametrize(
    ("field", "wrong"), [("contact_url", "support.example.fr"), ("contact_email", "nobody")]
)
def test_a_wrong_contact_is_refused(field: str, wrong: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        Settings(**{field: wrong})


def test_the_description_promises_only_what_exists(settings: Settings) -> None:
    document = _document(settings)
    description = document["info"]["description"].lower()
    assert "statistic" not in description
    tags = {tag["name"] for tag in document["tags"]}
    for resource in (
        "territories",
        "programmes",
        "agreements",
        "positions",
        "counsellors",
        "workshops",
        "changes",
    ):
        assert resource in tags


def test_readyz_503_has_examples_its_schema_accepts(settings: Settings) -> None:
    answer = _document(settings)["paths"]["/readyz"]["get"]["responses"]["503"]
    examples = answer["content"]["application/json"]["examples"]
    assert {name: example["value"]["database"] for name, example in examples.items()} == {
        "not_migrated": "ok",
        "unreachable": "unreachable",
        "read_only": "read_only",
    }
    for example in examples.values():
        # Whole, nulls included (FastAPI drops nulls from the document; they are put back).
        assert Readiness.model_validate(example["value"]).model_dump() == example["value"]
        assert example["value"]["status"] == "unavailable"
