"""The reference lists as plain Python: the enums other domains validate with, and their French labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from app.territories.codes import TerritoryKind

# The enums are written out (rather than built with the functional StrEnum API) so that mypy sees their
# members and accepts them as field types. Each list below is keyed by its enum and `_referential` refuses, at
# import time, a list that misses or adds a value: the enum and the published list cannot drift apart.


class Theme(StrEnum):
    """Workshop themes: La Coop de la médiation numérique's `Thematique`."""

    diagnostic_numerique = "diagnostic_numerique"
    prendre_en_main_du_materiel = "prendre_en_main_du_materiel"
    maintenance_de_materiel = "maintenance_de_materiel"
    gere_ses_contenus_numeriques = "gere_ses_contenus_numeriques"
    navigation_sur_internet = "navigation_sur_internet"
    email = "email"
    bureautique = "bureautique"
    reseaux_sociaux = "reseaux_sociaux"
    sante = "sante"
    banque_et_achats_en_ligne = "banque_et_achats_en_ligne"
    entrepreneuriat = "entrepreneuriat"
    insertion_professionnelle = "insertion_professionnelle"
    securite_numerique = "securite_numerique"
    parentalite = "parentalite"
    scolarite_et_numerique = "scolarite_et_numerique"
    creer_avec_le_numerique = "creer_avec_le_numerique"
    culture_numerique = "culture_numerique"
    intelligence_artificielle = "intelligence_artificielle"
    aide_aux_demarches_administratives = "aide_aux_demarches_administratives"


# A workshop's themes are stored as a bit mask, each theme's bit its place in the list above (a new theme
# goes at its end: tests/workshops/test_theme_bits.py holds the stored bits).
THEME_BITS = {theme.value: 1 << i for i, theme in enumerate(Theme)}


class Level(StrEnum):
    debutant = "debutant"
    intermediaire = "intermediaire"
    avance = "avance"


class ContractType(StrEnum):
    CDD = "CDD"
    CDI = "CDI"
    CDP = "CDP"
    PEC = "PEC"


class EndReason(StrEnum):
    demission = "demission"
    licenciement = "licenciement"
    non_reconduction_cdd = "non_reconduction_cdd"
    fin_de_contrat = "fin_de_contrat"
    autre = "autre"


class AmendmentReason(StrEnum):
    besoin_plus_justifie = "besoin_plus_justifie"
    difficultes_de_recrutement = "difficultes_de_recrutement"
    capacite_de_financement_insuffisante = "capacite_de_financement_insuffisante"
    visibilite_incertaine = "visibilite_incertaine"
    fin_de_subvention = "fin_de_subvention"
    autre = "autre"


class AgeBracket(StrEnum):
    moins_de_douze = "moins_de_douze"
    douze_dix_huit = "douze_dix_huit"
    dix_huit_vingt_quatre = "dix_huit_vingt_quatre"
    vingt_cinq_trente_neuf = "vingt_cinq_trente_neuf"
    quarante_cinquante_neuf = "quarante_cinquante_neuf"
    soixante_soixante_neuf = "soixante_soixante_neuf"
    soixante_dix_plus = "soixante_dix_plus"
    non_communique = "non_communique"


class SocialStatus(StrEnum):
    scolarise = "scolarise"
    sans_emploi = "sans_emploi"
    en_emploi = "en_emploi"
    retraite = "retraite"
    non_communique = "non_communique"


class TrainingLabel(StrEnum):
    CCP1 = "CCP1"
    CCP2 = "CCP2"
    CCP2_CCP3 = "CCP2_CCP3"


class PositionTypology(StrEnum):
    conum = "conum"
    coordinateur = "coordinateur"


class Attendance(StrEnum):
    present = "present"
    absent = "absent"
    excused = "excused"
    unknown = "unknown"


@dataclass(frozen=True, slots=True)
class Item:
    value: str
    label: str
    description: str


@dataclass(frozen=True, slots=True)
class Referential:
    name: str
    description: str
    enum: type[StrEnum]
    items: tuple[Item, ...]

    def values(self) -> tuple[str, ...]:
        return tuple(item.value for item in self.items)


E = TypeVar("E", bound=StrEnum)


def _referential(
    name: str, description: str, enum: type[E], entries: Mapping[E, tuple[str, str]]
) -> Referential:
    """The list in the enum's order; fails at import when `entries` does not cover the enum exactly."""
    missing = [m.value for m in enum if m not in entries]
    extra = [str(k) for k in entries if k not in set(enum)]
    if missing or extra:
        raise RuntimeError(f"referential {name!r} does not match {enum.__name__}: {missing=} {extra=}")
    items = tuple(Item(m.value, *entries[m]) for m in enum)
    return Referential(name, description, enum, items)


_THEMES = _referential(
    "themes",
    "Thématiques des ateliers et accompagnements (liste `Thematique` de La Coop de la médiation numérique).",
    Theme,
    {
        Theme.diagnostic_numerique: (
            "Diagnostic numérique",
            "Évaluer les compétences numériques de la personne et ses besoins d'accompagnement.",
        ),
        Theme.prendre_en_main_du_materiel: (
            "Prendre en main du matériel",
            "Utiliser un ordinateur, une tablette ou un smartphone : se repérer, installer une application.",
        ),
        Theme.maintenance_de_materiel: (
            "Maintenance de matériel",
            "Entretenir et mettre à jour ses appareils, libérer de l'espace, résoudre les pannes courantes.",
        ),
        Theme.gere_ses_contenus_numeriques: (
            "Gérer ses contenus numériques",
            "Classer, sauvegarder et partager ses fichiers, photos et documents.",
        ),
        Theme.navigation_sur_internet: (
            "Navigation sur internet",
            "Utiliser un navigateur, faire une recherche et se repérer sur un site.",
        ),
        Theme.email: (
            "E-mail",
            "Créer une adresse électronique, envoyer, recevoir et classer ses courriels.",
        ),
        Theme.bureautique: (
            "Bureautique",
            "Rédiger un document, utiliser un tableur, imprimer et numériser.",
        ),
        Theme.reseaux_sociaux: (
            "Réseaux sociaux",
            "Communiquer en ligne et contacter ses proches : messageries, appels vidéo, réseaux sociaux.",
        ),
        Theme.sante: (
            "Santé",
            "Utiliser les services de santé en ligne : Mon espace santé, prise de rendez-vous, compte Ameli.",
        ),
        Theme.banque_et_achats_en_ligne: (
            "Banque et achats en ligne",
            "Consulter ses comptes, payer et acheter en ligne en toute confiance.",
        ),
        Theme.entrepreneuriat: (
            "Entrepreneuriat",
            "Utiliser le numérique pour créer ou développer son activité professionnelle.",
        ),
        Theme.insertion_professionnelle: (
            "Insertion professionnelle",
            "Rédiger un CV, chercher un emploi ou une formation et postuler en ligne.",
        ),
        Theme.securite_numerique: (
            "Sécurité numérique",
            "Protéger ses données personnelles, ses comptes et ses appareils ; reconnaître les arnaques.",
        ),
        Theme.parentalite: (
            "Parentalité",
            "Accompagner ses enfants dans leurs usages numériques et suivre leur scolarité.",
        ),
        Theme.scolarite_et_numerique: (
            "Scolarité et numérique",
            "Suivre la scolarité des enfants en ligne : espace numérique de travail, notes, vie scolaire.",
        ),
        Theme.creer_avec_le_numerique: (
            "Créer avec le numérique",
            "Produire des contenus : photo, vidéo, musique, site web, impression 3D.",
        ),
        Theme.culture_numerique: (
            "Culture numérique",
            "Comprendre le numérique et vérifier l'information : sources, fausses nouvelles, algorithmes.",
        ),
        Theme.intelligence_artificielle: (
            "Intelligence artificielle",
            "Découvrir les outils d'intelligence artificielle, leurs usages et leurs limites.",
        ),
        Theme.aide_aux_demarches_administratives: (
            "Aide aux démarches administratives",
            "Faire ses démarches en ligne : impôts, CAF, France Travail, titres d'identité.",
        ),
    },
)

_LEVELS = _referential(
    "levels",
    "Niveaux des ateliers.",
    Level,
    {
        Level.debutant: ("Débutant", "Pour les personnes qui découvrent l'outil ou l'usage."),
        Level.intermediaire: ("Intermédiaire", "Pour les personnes qui en ont déjà une pratique de base."),
        Level.avance: ("Avancé", "Pour les personnes à l'aise qui veulent approfondir."),
    },
)

_TERRITORY_KINDS = _referential(
    "territory_kinds",
    "Types de collectivités et de territoires.",
    TerritoryKind,
    {
        TerritoryKind.region: ("Région", "Identifiée par son code INSEE à 2 chiffres (ex. 84)."),
        TerritoryKind.departement: (
            "Département",
            "Identifié par son code INSEE (ex. 69, 2A, 971).",
        ),
        TerritoryKind.metropole: ("Métropole", "Identifiée par son SIREN (ex. 200046977 pour Lyon)."),
        TerritoryKind.epci: (
            "EPCI (intercommunalité)",
            "Établissement public de coopération intercommunale, identifié par son SIREN.",
        ),
        TerritoryKind.commune: ("Commune", "Identifiée par son code INSEE à 5 caractères (ex. 69123)."),
    },
)

_CONTRACT_TYPES = _referential(
    "contract_types",
    "Types de contrat d'un conseiller numérique sur un poste.",
    ContractType,
    {
        ContractType.CDD: ("Contrat à durée déterminée", "Contrat de travail conclu pour une durée limitée."),
        ContractType.CDI: ("Contrat à durée indéterminée", "Contrat de travail sans terme fixé."),
        ContractType.CDP: (
            "Contrat de projet",
            "Contrat de la fonction publique dont le terme est la réalisation d'un projet.",
        ),
        ContractType.PEC: (
            "Parcours emploi compétences",
            "Contrat aidé associant emploi, formation et accompagnement.",
        ),
    },
)

_END_REASONS = _referential(
    "end_reasons",
    "Motifs de fin d'affectation (rupture).",
    EndReason,
    {
        EndReason.demission: ("Démission", "Le conseiller a quitté son poste à son initiative."),
        EndReason.licenciement: ("Licenciement", "L'employeur a mis fin au contrat."),
        EndReason.non_reconduction_cdd: (
            "Non-reconduction du CDD",
            "Le contrat à durée déterminée n'a pas été renouvelé.",
        ),
        EndReason.fin_de_contrat: ("Fin de contrat", "Le contrat est arrivé à son terme."),
        EndReason.autre: ("Autre", "Un autre motif, à préciser."),
    },
)

_AMENDMENT_REASONS = _referential(
    "amendment_reasons",
    "Motifs d'avenant à une convention (liste fermée de l'ANCT).",
    AmendmentReason,
    {
        AmendmentReason.besoin_plus_justifie: (
            "Besoin plus justifié",
            "Le besoin qui motivait les postes n'est plus justifié.",
        ),
        AmendmentReason.difficultes_de_recrutement: (
            "Difficultés de recrutement",
            "La structure ne parvient pas à recruter sur les postes.",
        ),
        AmendmentReason.capacite_de_financement_insuffisante: (
            "Capacité de financement insuffisante",
            "La structure ne peut plus financer sa part du coût des postes.",
        ),
        AmendmentReason.visibilite_incertaine: (
            "Visibilité incertaine",
            "La structure manque de visibilité sur les mois à venir.",
        ),
        AmendmentReason.fin_de_subvention: (
            "Fin de subvention",
            "La subvention de l'État arrive à son terme.",
        ),
        AmendmentReason.autre: ("Autre", "Un autre motif, à préciser."),
    },
)

_AGE_BRACKETS = _referential(
    "age_brackets",
    "Tranches d'âge des participants (compte rendu d'activité).",
    AgeBracket,
    {
        AgeBracket.moins_de_douze: ("Moins de 12 ans", "Participants de moins de 12 ans."),
        AgeBracket.douze_dix_huit: ("12 à 18 ans", "Participants de 12 à 18 ans."),
        AgeBracket.dix_huit_vingt_quatre: ("18 à 24 ans", "Participants de 18 à 24 ans."),
        AgeBracket.vingt_cinq_trente_neuf: ("25 à 39 ans", "Participants de 25 à 39 ans."),
        AgeBracket.quarante_cinquante_neuf: ("40 à 59 ans", "Participants de 40 à 59 ans."),
        AgeBracket.soixante_soixante_neuf: ("60 à 69 ans", "Participants de 60 à 69 ans."),
        AgeBracket.soixante_dix_plus: ("70 ans et plus", "Participants de 70 ans et plus."),
        AgeBracket.non_communique: ("Non communiqué", "L'âge n'a pas été renseigné."),
    },
)

_SOCIAL_STATUSES = _referential(
    "social_statuses",
    "Situations des participants (compte rendu d'activité).",
    SocialStatus,
    {
        SocialStatus.scolarise: ("Scolarisé", "Élève ou étudiant."),
        SocialStatus.sans_emploi: ("Sans emploi", "Personne sans activité professionnelle, hors retraite."),
        SocialStatus.en_emploi: ("En emploi", "Personne qui exerce une activité professionnelle."),
        SocialStatus.retraite: ("Retraité", "Personne à la retraite."),
        SocialStatus.non_communique: ("Non communiqué", "La situation n'a pas été renseignée."),
    },
)

_TRAINING_LABELS = _referential(
    "training_labels",
    "Certifications de la formation des conseillers numériques.",
    TrainingLabel,
    {
        TrainingLabel.CCP1: (
            "CCP1",
            "Premier certificat de compétences professionnelles du titre de responsable d'espace "
            "de médiation numérique.",
        ),
        TrainingLabel.CCP2: (
            "CCP2",
            "Deuxième certificat de compétences professionnelles du titre de responsable d'espace de "
            "médiation numérique.",
        ),
        TrainingLabel.CCP2_CCP3: (
            "CCP2 et CCP3",
            "Deuxième et troisième certificats de compétences professionnelles, obtenus ensemble.",
        ),
    },
)

_POSITION_TYPOLOGIES = _referential(
    "position_typologies",
    "Types de postes financés.",
    PositionTypology,
    {
        PositionTypology.conum: (
            "Conseiller numérique",
            "Accompagne les publics vers l'autonomie numérique, en atelier ou en individuel.",
        ),
        PositionTypology.coordinateur: (
            "Coordinateur",
            "Coordonne l'action d'un réseau de conseillers numériques sur un territoire.",
        ),
    },
)

_ATTENDANCE_STATUSES = _referential(
    "attendance_statuses",
    "Présence d'une personne inscrite à un atelier.",
    Attendance,
    {
        Attendance.present: ("Présent", "La personne a participé à l'atelier."),
        Attendance.absent: ("Absent", "La personne ne s'est pas présentée."),
        Attendance.excused: ("Excusé", "La personne a prévenu de son absence."),
        Attendance.unknown: ("Non renseigné", "La présence n'a pas encore été enregistrée."),
    },
)

REFERENTIALS: dict[str, Referential] = {
    r.name: r
    for r in (
        _THEMES,
        _LEVELS,
        _TERRITORY_KINDS,
        _CONTRACT_TYPES,
        _END_REASONS,
        _AMENDMENT_REASONS,
        _AGE_BRACKETS,
        _SOCIAL_STATUSES,
        _TRAINING_LABELS,
        _POSITION_TYPOLOGIES,
        _ATTENDANCE_STATUSES,
    )
}


def values(name: str) -> tuple[str, ...]:
    """The values of one list, in order; KeyError for an unknown name."""
    return REFERENTIALS[name].values()


_LABELS = {r.name: {item.value: item.label for item in r.items} for r in REFERENTIALS.values()}


def label(name: str, value: str) -> str:
    """The French label of `value` in list `name` (the value itself when unknown, e.g. in CSV exports)."""
    return _LABELS[name].get(value, value)
