"""How names and queries become words, and how well a territory matches a query (shared by SQL and Python).

A name's words are its folded letters and digits (case, accents, hyphens and apostrophes ignored:
"L'Isle-d'Abeau" is `l isle d abeau`). A query matches a territory when each of its words starts one of
the territory's words (its name's, its code, its SIREN, its postcodes), in any order. `st` and `ste` also
stand for `saint` and `sainte`."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from app.territories.codes import fold

# The lengths of the name keys and of a word in the word table (the columns of `app.territories.models`).
# They live here, not beside the columns, so that this module imports no ORM: the benchmark's reference app
# shares it.
NAME_SORT_LENGTH = 200
TOKEN_LENGTH = 64

_WORD = re.compile(r"[a-z0-9]+", re.ASCII)
# Abbreviations a query may use for a word of a name.
ABBREVIATIONS = {"st": "saint", "ste": "sainte", "sts": "saints", "stes": "saintes"}
MAX_QUERY_WORDS = 8
# Words found in thousands of names: a poor first filter when the query holds a rarer one.
COMMON_WORDS = frozenset(
    {"saint", "sainte", "sur", "sous", "la", "le", "les", "de", "du", "des", "en", "et", "l", "d", "cc", "ca"}
)
# Phrase variants compared with whole names (each abbreviation doubles them).
MAX_VARIANTS = 8

# Match quality, best first: the query is the territory's code or SIREN; its whole name; the first whole
# words of its name; whole words of its name, anywhere; the start of its name (the last word typed in
# part); words found elsewhere (starts of words, codes, postcodes).
CODE, NAME, NAME_START, WHOLE_WORDS, NAME_PREFIX, WORDS = range(6)


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def search_name(name: str) -> str:
    return " ".join(words(name))[:NAME_SORT_LENGTH]


@dataclass(frozen=True)
class NameKeys:
    """What a name is sorted and searched by, folded once."""

    name_sort: str
    search_name: str
    words: list[str]


def name_keys(name: str) -> NameKeys:
    # Folding can lengthen a name (ß → ss, some ligatures → many letters): cut to the columns' size, which
    # only affects searches for text beyond the 200th folded character.
    folded = fold(name)
    found = _WORD.findall(folded)
    return NameKeys(folded[:NAME_SORT_LENGTH], " ".join(found)[:NAME_SORT_LENGTH], found)


def tokens(
    *,
    code: str,
    name: str,
    siren: str | None = None,
    postcodes: list[str] | None = None,
    name_words: list[str] | None = None,
) -> set[str]:
    """Every word a search may start: the name's words, the code, the SIREN and the postcodes."""
    found = set(name_words if name_words is not None else words(name)) | {code.lower()}
    if siren:
        found.add(siren)
    found.update(postcodes or [])
    return {token[:TOKEN_LENGTH] for token in found if token}


@dataclass(frozen=True)
class Query:
    """A parsed `q`: for each word, the prefixes it may stand for; the whole-name variants; the code."""

    alternatives: list[tuple[str, ...]]
    phrases: list[str]
    code: str | None

    @property
    def empty(self) -> bool:
        return not self.alternatives

    def by_selectivity(self) -> list[tuple[str, ...]]:
        """The words, the likely rarest first: uncommon before common, longer before shorter."""
        return sorted(
            self.alternatives,
            key=lambda words: (any(w in COMMON_WORDS for w in words), -min(len(w) for w in words)),
        )

    def quality(self, code: str, siren: str | None, search_name: str) -> int:
        """The Python twin of the SQL ranking (repository.match_quality), for the row a cursor follows."""
        if self.code is not None and self.code in (code, siren):
            return CODE
        if search_name in self.phrases:
            return NAME
        if any(search_name.startswith(phrase + " ") for phrase in self.phrases):
            return NAME_START
        padded = f" {search_name} "
        if all(any(f" {word} " in padded for word in words) for words in self.alternatives):
            return WHOLE_WORDS
        if any(search_name.startswith(phrase) for phrase in self.phrases):
            return NAME_PREFIX
        return WORDS


def parse(q: str) -> Query:
    found = words(q)[:MAX_QUERY_WORDS]
    alternatives: list[tuple[str, ...]] = [
        (w, ABBREVIATIONS[w]) if w in ABBREVIATIONS else (w,) for w in found
    ]
    phrases = [" ".join(p) for p in itertools.islice(itertools.product(*alternatives), MAX_VARIANTS)]
    # Codes are upper-case (2A, 2B); a query of one word may be one.
    code = found[0].upper() if len(found) == 1 else None
    return Query(alternatives=alternatives, phrases=phrases if found else [], code=code)
