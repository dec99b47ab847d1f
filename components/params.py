"""Loading ``params.yaml`` into pydantic models, with one-line errors.

Every pipeline step declares its own config model (``extra="forbid"``) next to its code and reads its
section with :func:`load_section`; :class:`Params` (the whole file) is assembled from those models in
``components/config.py`` so that ``params.yaml`` is validated as a whole too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fsdino.errors import InputError

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_PARAMS = Path("params.yaml")


def format_validation_error(error: ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``params.yaml: model.image_size: expected a multiple of 14 …`` for the first problem."""
    detail = error.errors()[0]
    location = ".".join(str(part) for part in (*([prefix] if prefix else []), *detail["loc"]))
    message = detail["msg"]
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in detail and detail["type"] not in ("missing",):
        message = f"{message} (got {detail['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {location or '<root>'}: {message}{suffix}"


#: libyaml's loader when PyYAML was built with it (≈10× faster: ``dvc.lock`` is read by every tracked step).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml when available; errors are :class:`yaml.YAMLError` as usual."""
    return yaml.load(text, Loader=_SAFE_LOADER)


def read_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: params file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}") from error
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate(model: type[ModelT], data: Any, source: str, prefix: str = "") -> ModelT:
    """Validate ``data`` into ``model`` or raise :class:`InputError` with a one-line message."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(format_validation_error(error, source, prefix)) from error


def load_section(model: type[ModelT], section: str, path: Path | str = DEFAULT_PARAMS) -> ModelT:
    """Read one top-level section of ``params.yaml`` into ``model``."""
    data = read_yaml(path)
    if section not in data:
        raise InputError(f"{path}: missing section {section!r}")
    return validate(model, data[section], str(path), section)


def require_sections(model: type[BaseModel], data: dict[str, Any], source: str) -> None:
    """Raise :class:`InputError` naming the first top-level field of ``model`` that ``data`` lacks.

    The params file a pipeline step reads is complete, as ``python -m components.profile`` renders it: a
    missing section is an error, never a silent switch to that section's defaults (only a profile, which
    is an override file, may leave sections out). An unknown key is left to validation, which names it
    (a typo such as ``modle:`` is reported as itself, not as a missing ``model``).
    """
    if not data.keys() <= model.model_fields.keys():
        return
    missing = [name for name in model.model_fields if name not in data]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{source}: missing section {missing[0]!r}{more}: a params file holds every section "
            "(render a complete one with `python -m components.profile <name>`)"
        )


def _nested(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) of section ``a.b.c`` of ``data``."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def section_values(
    params_path: Path | None, section_name: str | None, default_section: str
) -> tuple[dict[str, Any], Path, str]:
    """The mapping under one section of a params file, for steps that also take flag overrides.

    A section may be nested, named with dots (``benchmark.pascal`` in the whole-pipeline ``params.yaml``);
    one that is present but null reads as empty. A file or section named explicitly must exist; otherwise
    ``params.yaml`` is read only when present and a missing section reads as empty. Returns (values, the
    file's path, the section's name).
    """
    path, wanted = params_path or DEFAULT_PARAMS, section_name or default_section
    explicit = params_path is not None or section_name is not None
    if not explicit and not path.is_file():
        return {}, path, wanted
    params = read_yaml(path)
    found, values = _nested(params, wanted)
    if explicit and not found:
        raise InputError(
            f"{path}: missing section {wanted!r} (top-level sections: {', '.join(params) or 'none'}; "
            "name a nested one with dots, as benchmark.pascal)"
        )
    values = values or {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: {wanted}: expected a mapping, got {type(values).__name__}")
    return dict(values), path, wanted
