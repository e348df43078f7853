"""The change feed's HTTP face: GET /changes (the mechanism is `app.core.changes`)."""
