"""The process: builds the one ASGI app (receiver, API, dashboard) and the runtime that owns the
database, the writer and the background jobs, and runs it under uvicorn."""
