"""Pipeline steps: typed config in, artifacts out, callable from the CLI (DVC) and as functions (Prefect)."""
