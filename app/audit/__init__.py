"""The audit trail and the personal-data journal, read by admins (`GET /audit-events`)."""
