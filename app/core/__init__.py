"""Mechanisms every domain uses: problems, pagination, versions, idempotency, auth, scoping."""
