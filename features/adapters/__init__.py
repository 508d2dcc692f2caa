"""Dataset adapters: read public data sets into the EVENTS / CATALOG / CUSTOMERS schemas."""
