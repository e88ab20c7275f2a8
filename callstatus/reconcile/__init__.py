"""Reconciliation with Plivo's call records: the Call API client, storing records, the job."""
