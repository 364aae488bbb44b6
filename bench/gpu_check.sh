#!/usr/bin/env bash
# The GPU issue's device run, as one prepared script: GPU tests, then bench/kernel.py.
# Run from the repository root on a machine with a CUDA GPU; results land in $OUT (default /tmp/gtc_gpu):
#   gpu_tests.log, kernel.json, kernel.png, kernel.log, nvidia-smi.txt.
# Commit kernel.json/png into bench/results/kernel/ afterwards (bench/README.md, "GPU kernel"). GTC_COMMIT names
# the commit measured (the device copy of the tree has no .git); kernel.json records it with the command and machine.
set -o pipefail
OUT=${OUT:-/tmp/gtc_gpu}
mkdir -p "$OUT"
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/versions.txt"
# tests/gpu: the kernel, the op's CUDA registration, compile / CUDA graphs, AOT PTX via cupy.
# The torch backend's CUDA tests too; the two that need fastapi/tritonclient (not on the H200 image) are left out.
timeout "${GPU_TEST_TIMEOUT:-180}" python3 -m pytest -q -p no:cacheprovider -rs tests/gpu \
  tests/runtime/test_torch_backend.py tests/cli/test_runtime_device.py -k "not served and not imports_without_torch" \
  2>&1 | tail -n 80 | tee "$OUT/gpu_tests.log"
tests=$?
timeout "${BENCH_TIMEOUT:-390}" python3 bench/kernel.py --out "$OUT/kernel.json" --max-minutes "${BENCH_MINUTES:-5}" "$@" 2>&1 | tee "$OUT/kernel.log"
bench=$?
echo "gpu tests exit $tests, bench exit $bench"
exit $(( tests != 0 || bench != 0 ))
