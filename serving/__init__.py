"""The FastAPI recommendation service and the batch picks that share its rules."""
