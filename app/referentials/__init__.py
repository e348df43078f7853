"""Reference lists (themes, levels, contract types, ...): values and French labels, one source of truth."""
