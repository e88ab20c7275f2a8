"""Realistic Plivo traffic: the traffic model and its settings, `simulate` over HTTP and `seed`
straight into a database."""
