"""Problem types of the agreements domain (agreements, their transitions and amendments)."""

from app.core.problems import AppError


class AgreementReferenceExists(AppError):
    """The programme already has an agreement with this reference."""

    status, code, title = 409, "agreement_reference_exists", "Agreement reference exists"


class AgreementNotEditable(AppError):
    """Only a draft agreement can be changed; a signed one changes through amendments."""

    status, code, title = 409, "agreement_not_editable", "Agreement not editable"


class InvalidTransition(AppError):
    """The agreement's status does not allow this action (sign a draft; terminate a draft or a signed one)."""

    status, code, title = 409, "invalid_transition", "Invalid transition"


class AgreementNotSigned(AppError):
    """The action needs a signed agreement (amendments, positions)."""

    status, code, title = 409, "agreement_not_signed", "Agreement not signed"


class AgreementHasOccupiedPositions(AppError):
    """An agreement with occupied positions cannot be terminated: end the assignments first."""

    status, code, title = 409, "agreement_has_occupied_positions", "Agreement has occupied positions"


class ProgrammePositionsExceeded(AppError):
    """The programme's draft and signed agreements would grant more positions than its target."""

    status, code, title = 409, "programme_positions_exceeded", "Programme positions exceeded"


class ProgrammeBudgetExceeded(AppError):
    """The programme's draft and signed agreements would commit more subsidy than its budget."""

    status, code, title = 409, "programme_budget_exceeded", "Programme budget exceeded"


class PositionsBelowAllocated(AppError):
    """An agreement cannot grant fewer positions than it has open positions."""

    status, code, title = 409, "positions_below_allocated", "Positions below allocated"
