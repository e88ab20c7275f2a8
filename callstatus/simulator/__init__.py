"""Realistic Plivo traffic: the traffic model, its settings, `simulate` over HTTP and `seed` straight into a database."""
