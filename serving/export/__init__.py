"""Email picks in bulk (``patron picks export``): the API's scoring and rules over batches."""

from serving.export.job import RECENT_K, ExportReport, export_picks, select_customers

__all__ = ["RECENT_K", "ExportReport", "export_picks", "select_customers"]
