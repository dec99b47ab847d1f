#!/usr/bin/env bash
# Everything a lent GPU machine is for, in one call that ends within its 10-minute limit (BENCH_SESSION_S):
#   1. the CUDA tests (tests/gpu: GPU vs CPU logits, bf16, both training loops, a GPU-trained model on the CPU);
#   2. the benchmark suites at paper size under what is left of the time (python -m benchmarks.run --budget-s).
# Results, logs and the machine's description land in $OUT; copy $OUT/results/* to benchmarks/results/.
#
# Prepare here:  bash benchmarks/wheels.sh           (the packages that machine lacks, into .wheels/)
# Run there:     BENCH_GIT_COMMIT=<sha> bash benchmarks/gpu_session.sh     (device tool: carry [".wheels"])
# Env: OUT (required), PYTHON (python3), BENCH_SESSION_S (560), BENCH_SUITES, BENCH_SIZE (auto), BENCH_DEVICE,
#      BENCH_WHEELS (.wheels).
set -uo pipefail
out=${OUT:?set OUT to the folder the results go to}
python=${PYTHON:-python3}
session_s=${BENCH_SESSION_S:-560}
suites=${BENCH_SUITES:-inference,encoder,caching,distill,train}
size=${BENCH_SIZE:-auto}
device=${BENCH_DEVICE:-auto}
wheels=${BENCH_WHEELS:-.wheels}
mkdir -p "$out/results"
export TQDM_DISABLE=1  # progress bars would flood the logs
say() { echo "[gpu_session ${SECONDS}s] $*"; }

site=$(mktemp -d)
if compgen -G "$wheels/*.whl" > /dev/null; then
  "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl \
    || { say "installing $wheels failed"; exit 2; }
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi || true
  "$python" - <<'PY'
import importlib.metadata as metadata, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for name in ("timm", "segment-anything", "pydantic", "numpy", "torchvision"):
    print(name, metadata.version(name))
PY
} > "$out/environment.txt" 2>&1
status=$?
cat "$out/environment.txt"
[ "$status" -eq 0 ] || { say "the environment check failed: the imports above are missing"; exit 2; }

say "CUDA tests"
timeout 150 "$python" -m pytest -q -m gpu tests/gpu -p no:cacheprovider > "$out/gpu-tests.log" 2>&1
tests_rc=$?
tail -n 15 "$out/gpu-tests.log"
say "CUDA tests exit $tests_rc"

left=$((session_s - SECONDS))
budget=$((left - 100))  # a case already running is let finish: leave it room
if [ "$budget" -lt 30 ]; then
  say "only ${left}s left: no benchmarks"
  exit 1
fi
say "benchmarks ($suites, size $size) with --budget-s $budget"
timeout "$left" "$python" -m benchmarks.run --suite "$suites" --size "$size" --device "$device" \
  --budget-s "$budget" --out "$out/results" > "$out/benchmarks.log" 2>&1
bench_rc=$?
grep -E '^(###|\| `|- )' "$out/benchmarks.log" | tail -n 60
say "benchmarks exit $bench_rc; written: $(ls "$out/results" | tr '\n' ' ')"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
