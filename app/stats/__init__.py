"""Statistics: aggregated, public figures of the programme."""
