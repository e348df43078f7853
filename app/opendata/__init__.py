"""Open data: the venues of public workshops in the national standard of lieux de médiation numérique."""
