"""Prefect flows: orchestration only; the steps they run live in ``components/``."""
