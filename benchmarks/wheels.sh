#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, for its Python, into .wheels/ (git-ignored; the device tool carries it).
#
# That machine has torch, torchvision, timm's dependencies, numpy, pillow, pyyaml, tqdm and pytest, but not
# pydantic or segment_anything, and nothing can be fetched there. This takes the versions installed here
# (timm too, so that the GPU runs the timm the tests ran), as wheels for Python ${PY_VERSION:-3.12} on x86-64.
#   usage: bash benchmarks/wheels.sh [DEST]        (env: PYTHON, PY_VERSION)
set -euo pipefail
dest=${1:-.wheels}
python=${PYTHON:-python}
py_version=${PY_VERSION:-3.12}
names=(pydantic pydantic-core annotated-types typing-inspection timm segment-anything)
pins=()
for name in "${names[@]}"; do
  version=$("$python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name") || {
    echo "wheels.sh: $name is not installed in $python; run it from the project's venv" >&2
    exit 2
  }
  pins+=("$name==$version")
done
staging=$(mktemp -d "${dest%/}.partial-XXXXXX")
trap 'rm -rf "$staging"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$staging" --python-version "$py_version" \
  --platform manylinux2014_x86_64 --only-binary=:all: "${pins[@]}"
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
ls "$dest"
