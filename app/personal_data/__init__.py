"""Personal data: what is held about a person, its erasure on request, and its retention (the purge)."""
