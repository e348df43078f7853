"""Problem types of the positions domain (positions and assignments)."""

from app.core.problems import AppError


class AgreementPositionsExhausted(AppError):
    """Every position the agreement grants is already open: amend the agreement or close a position first."""

    status, code, title = 409, "agreement_positions_exhausted", "Agreement positions exhausted"


class TerritoryOutsideAgreement(AppError):
    """A position's territory must be the agreement's territory or one of its descendants."""

    status, code, title = 422, "territory_outside_agreement", "Territory outside agreement"


class PositionExternalRefExists(AppError):
    """The external reference is taken: positions within the agreement's territory, counsellors within their
    employer territory."""

    status, code, title = 409, "external_ref_exists", "External reference exists"


class PositionClosed(AppError):
    """The position is closed: it takes no assignment and cannot be closed again."""

    status, code, title = 409, "position_closed", "Position closed"


class PositionOccupied(AppError):
    """Another assignment of this position covers one of these days."""

    status, code, title = 409, "position_occupied", "Position occupied"


class CounsellorAlreadyAssigned(AppError):
    """The counsellor holds another position on one of these days."""

    status, code, title = 409, "counsellor_already_assigned", "Counsellor already assigned"


class AssignmentAlreadyEnded(AppError):
    """The assignment has already ended."""

    status, code, title = 409, "assignment_already_ended", "Assignment already ended"
