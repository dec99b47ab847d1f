"""Where MLflow runs and models go (a light module: loading ``params.yaml`` must not import MLflow)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Root that relative tracking URIs, artifact locations and ``dvc.lock`` are resolved against by default;
#: the pipeline steps pass the working directory (the DVC workspace) instead.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

_SQLITE_PREFIX = "sqlite:///"


class TrackingConfig(BaseModel):
    """Where runs and models go.

    ``tracking_uri`` and a local ``artifact_location`` may be relative to the project root. Without an
    ``artifact_location``, a local SQLite store keeps artifacts in ``<root>/mlruns`` and a tracking server
    chooses itself (e.g. its ``--artifacts-destination``). The location applies when the experiment is
    created; an existing experiment keeps its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    tracking_uri: str = Field(default="sqlite:///mlflow.db", min_length=1)
    experiment_name: str = Field(default="fsdino", min_length=1)
    artifact_location: str | None = None
    registered_model_name: str = Field(default="fsdino", min_length=1)

    def resolved_artifact_location(self, root: Path = PROJECT_ROOT, tracking_uri: str | None = None) -> str | None:
        """Where a new experiment keeps artifacts: ``artifact_location``, else ``<root>/mlruns`` when tracking
        goes to SQLite (``tracking_uri``: the URI in use, the configured one when omitted), else the server's."""
        if self.artifact_location is None:
            uri = self.tracking_uri if tracking_uri is None else tracking_uri
            return (root / "mlruns").resolve().as_uri() if uri.startswith("sqlite:") else None
        if "://" in self.artifact_location:
            return self.artifact_location
        return (root / self.artifact_location).resolve().as_uri()


def resolve_tracking_uri(uri: str, root: Path = PROJECT_ROOT) -> str:
    """``sqlite:///mlflow.db`` → ``sqlite:////<root>/mlflow.db``; absolute SQLite paths and URLs unchanged."""
    if not uri.startswith(_SQLITE_PREFIX):
        return uri
    database = uri[len(_SQLITE_PREFIX) :]
    if not database or database.startswith(("/", ":memory:")):
        return uri
    return _SQLITE_PREFIX + str((root / database).resolve())
