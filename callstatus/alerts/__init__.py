"""Alerts and scheduled reports: rules over the dashboard's metrics, channels, the job in serve."""
