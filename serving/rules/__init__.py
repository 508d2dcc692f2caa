"""Tier business rules as data (YAML), applied by pure functions over candidate arrays."""
