"""Data contracts, validation, dataset adapters, loyalty features, online feature store."""
