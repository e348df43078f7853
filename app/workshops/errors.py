"""Problem types of the workshops domain (workshops, registrations, attendance)."""

from app.core.problems import AppError


class WorkshopFull(AppError):
    """Every seat and every waitlist place of the workshop is taken."""

    status, code, title = 409, "workshop_full", "Workshop full"


class WorkshopClosed(AppError):
    """The workshop takes no registration: it is cancelled, completed or has already started."""

    status, code, title = 409, "workshop_closed", "Workshop closed"


class AlreadyRegistered(AppError):
    """This email address already holds a registration (confirmed or waitlisted) on this workshop."""

    status, code, title = 409, "already_registered", "Already registered"


class CapacityBelowRegistrations(AppError):
    """The capacity (or the waitlist) cannot go below the registrations it already holds."""

    status, code, title = 409, "capacity_below_registrations", "Capacity below registrations"


class WorkshopNotEditable(AppError):
    """A cancelled or completed workshop cannot change (nor be cancelled again)."""

    status, code, title = 409, "workshop_not_editable", "Workshop not editable"


class WorkshopNotStarted(AppError):
    """Attendance is recorded once the workshop has started."""

    status, code, title = 409, "workshop_not_started", "Workshop not started"


class AttendanceTotalsMismatch(AppError):
    """The walk-ins' breakdowns by age bracket and by social status must each add up to their total."""

    status, code, title = 422, "attendance_totals_mismatch", "Attendance totals mismatch"
