"""Clustered mode: webhooks stored in PostgreSQL by stateless receivers, copied into each
dashboard's DuckDB replica."""
