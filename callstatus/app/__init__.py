"""The process: builds the one ASGI app (receiver, API, dashboard), the runtime that owns the database, writer and jobs, and runs it under uvicorn."""
