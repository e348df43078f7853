"""Problem types of the counsellors domain."""

from app.core.problems import AppError


class CounsellorExternalRefExists(AppError):
    """The external reference is taken: positions within the agreement's territory, counsellors within their
    employer territory."""

    status, code, title = 409, "external_ref_exists", "External reference exists"


class CounsellorAnonymized(AppError):
    """The counsellor's personal data was erased: the record can no longer change."""

    status, code, title = 409, "counsellor_anonymized", "Counsellor anonymized"


class BulkRejected(AppError):
    """With `atomic=true`, at least one item failed, so none was applied: `items` gives each item's result."""

    status, code, title = 422, "bulk_rejected", "Bulk request rejected"
