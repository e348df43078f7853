"""Statistics: public aggregates of positions and workshops, with statistical confidentiality."""
