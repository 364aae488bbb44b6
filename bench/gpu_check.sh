#!/usr/bin/env bash
# The GPU issue's device run, as one prepared script: GPU tests, then bench/kernel.py, in at most
# TOTAL_S seconds (default 480: the 8 minutes). The tests get at most GPU_TEST_TIMEOUT; the
# benchmark gets what they leave, and stops starting rows BENCH_RESERVE_S before its end so that the
# row in flight (a torch.compile can take a minute), the summary and the PNG still fit.
# Run from the repository root on a machine with a CUDA GPU; results land in $OUT (default /tmp/gtc_gpu):
#   gpu_tests.log, kernel.json, kernel.png, kernel.log, nvidia-smi.txt.
# Commit kernel.json/png and gpu_tests.log into bench/results/kernel/ afterwards (bench/README.md, "GPU kernel").
# GTC_COMMIT names the commit measured (the device copy of the tree has no .git); kernel.json records it with the
# command and machine.
set -o pipefail
OUT=${OUT:-/tmp/gtc_gpu}
TOTAL_S=${TOTAL_S:-480}
BENCH_RESERVE_S=${BENCH_RESERVE_S:-75}
start=$(date +%s)
mkdir -p "$OUT"
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# The benchmark profiles kernels (torch.profiler, CUPTI) after capturing CUDA graphs by hand; torch's own
# note: "CUDA Graph does not work well with CUPTI teardown" (it sets this only for inductor's graphs).
export TEARDOWN_CUPTI=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if [ -z "${GTC_COMMIT:-}" ] && [ ! -d .git ]; then
  echo "warning: GTC_COMMIT is unset and this copy has no .git: kernel.json will record commit 'unknown'" >&2
fi
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/versions.txt"
# tests/gpu: the kernel, the op's CUDA registration, compile / CUDA graphs, AOT PTX via cupy.
# The torch backend's CUDA tests too; the two that need fastapi/tritonclient (not on the H200 image) are left out.
# Most of their time is Triton compiling one kernel variant per case on one core: pytest-xdist (on the H200
# image) spreads them over the machine's cores.
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${GPU_TEST_WORKERS:-8}")
# The whole log goes to the file (every failure's traceback: the run cannot be repeated to see them), its
# end to the console. Past its time pytest is interrupted (SIGINT, which tests/conftest.py re-enables where
# a background launch ignores it), not terminated: it then still writes the failures it has, tracebacks
# included; a SIGTERM killed it with only its progress dots written. -k: a process that cannot take the
# interrupt (stuck in a CUDA call) is killed 30 s later.
timeout -s INT -k 30 "${GPU_TEST_TIMEOUT:-150}" python3 -m pytest -q -p no:cacheprovider -rs --durations=15 $workers tests/gpu \
  tests/runtime/test_torch_backend.py tests/cli/test_runtime_device.py \
  -k "not test_served_checkpoint and not imports_without_torch" \
  2>&1 | tee "$OUT/gpu_tests.log" | tail -n 100
tests=$?
# the benchmark's kill grace (-k) comes out of its share, so that a stuck run still ends by TOTAL_S
KILL_GRACE_S=20
left=$(( TOTAL_S - ($(date +%s) - start) - KILL_GRACE_S ))
minutes=$(python3 -c "print(round(max(1.0, ($left - $BENCH_RESERVE_S) / 60), 2))")
echo "tests took $(( $(date +%s) - start )) s; the benchmark gets ${left} s (--max-minutes $minutes)" | tee -a "$OUT/gpu_tests.log"
# SIGTERM: bench/kernel.py still writes its summary and PNG; -k: killed if it cannot (stuck in a CUDA call).
if [ "$left" -lt 60 ]; then
  # timeout 0 would mean no limit, a negative one runs nothing: say so instead
  echo "error: the tests left ${left} s of TOTAL_S=${TOTAL_S}, under the benchmark's 60 s minimum; not run" | tee "$OUT/kernel.log"
  bench=1
else
  timeout -k "$KILL_GRACE_S" "$left" python3 bench/kernel.py --out "$OUT/kernel.json" --max-minutes "$minutes" "$@" 2>&1 | tee "$OUT/kernel.log"
  bench=$?
fi
echo "gpu tests exit $tests, bench exit $bench, $(( $(date +%s) - start )) s in all"
exit $(( tests != 0 || bench != 0 ))
