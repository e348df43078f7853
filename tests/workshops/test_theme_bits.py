"""The bit of each theme in a workshop's stored `themes_mask` never moves.

`THEME_BITS` is derived from the order of the Theme enum; the stored masks are not. A theme inserted
anywhere but at the end of the enum would renumber the bits and silently change what every stored mask
means: this pins them (a new theme takes the next free bit, at the end)."""

from __future__ import annotations

from app.workshops.schemas import THEME_BITS

STORED_BITS = {
    "diagnostic_numerique": 1 << 0,
    "prendre_en_main_du_materiel": 1 << 1,
    "maintenance_de_materiel": 1 << 2,
    "gere_ses_contenus_numeriques": 1 << 3,
    "navigation_sur_internet": 1 << 4,
    "email": 1 << 5,
    "bureautique": 1 << 6,
    "reseaux_sociaux": 1 << 7,
    "sante": 1 << 8,
    "banque_et_achats_en_ligne": 1 << 9,
    "entrepreneuriat": 1 << 10,
    "insertion_professionnelle": 1 << 11,
    "securite_numerique": 1 << 12,
    "parentalite": 1 << 13,
    "scolarite_et_numerique": 1 << 14,
    "creer_avec_le_numerique": 1 << 15,
    "culture_numerique": 1 << 16,
    "intelligence_artificielle": 1 << 17,
    "aide_aux_demarches_administratives": 1 << 18,
}


def test_every_theme_keeps_its_bit() -> None:
    assert {name: bit for name, bit in THEME_BITS.items() if name in STORED_BITS} == STORED_BITS


def test_a_new_theme_takes_a_new_bit() -> None:
    assert len(set(THEME_BITS.values())) == len(THEME_BITS)
    new = [bit for name, bit in THEME_BITS.items() if name not in STORED_BITS]
    assert all(bit > max(STORED_BITS.values()) for bit in new)
