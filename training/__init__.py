"""Offline jobs: interactions, models, evaluation, bundle writing, MLflow registry."""
