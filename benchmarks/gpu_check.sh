#!/usr/bin/env bash
# Every GPU check of the project in one prepared run, for a session that is lent a GPU machine
# (the workplace's `device` tool: a short lease, no network there, torch + CuPy + numba already
# in its image, the peers not).
#
#   bash benchmarks/gpu_check.sh --fetch   # here, once: wheels of the peers into .whl/
#                                          # (~3 MB; .whl/ is added to .git/info/exclude)
#   bash benchmarks/gpu_check.sh           # there (device run, carry [".whl"]), ~5-8 minutes
#
# On the GPU machine it installs the carried wheels into /tmp/site (nothing else is installed:
# spiking runs from the checkout), then writes to $OUT (default /tmp/gpu-check):
#   machine.txt      nvidia-smi, torch / CuPy / numba versions, the GPU's name
#   cuda-tests.txt   pytest -m cuda over the CUDA kernel tests (real CuPy, real GPU)
#   neurons.txt/.json  benchmarks/neurons.py --device cuda (ours vs snnTorch, Norse,
#                    SpikingJelly 0.0.0.0.14 torch + cupy; T=128 B=1 N=2**20 and the Open
#                    Neuromorphic replica; copy bandwidth, peak memory, TF32 state)
#   neurons-sj2.txt  ours vs SpikingJelly 2.0.0 (no CuPy backend any more: its Triton one),
#                    T=128 B=1 N=2**20 only
#   wkv.txt, ltc.txt the WKV and LTC benchmarks on the GPU
# Each step has its own time limit (530 s in all, under the tool's 600 s per command), so one
# that hangs does not cost the rest; what a step wrote so far is in $OUT either way.
set -u
cd "$(dirname "$0")/.."

# SpikingJelly: 0.0.0.0.14 is the last release with the CuPy LIF that issue 3 compares with
# (2.0 removed it); 2.0.0 (+ loguru) goes to .whl/sj2 for a run of its own (one version per process).
PEERS="snntorch==1.0.0 spikingjelly==0.0.0.0.14 nir==1.0.8 nirtorch==2.6 ncps==1.0.1"
SJ2="spikingjelly==2.0.0 loguru==0.7.3"
if [ "${1:-}" = "--fetch" ]; then
    mkdir -p .whl
    if [ -d .git/info ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
        echo '/.whl/' >>.git/info/exclude  # carried to the GPU machine, never committed
    fi
    # pure-Python wheels; norse 1.1.0 ships only an sdist, built into a wheel here
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl $PEERS || exit 1
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl/sj2 $SJ2 || exit 1
    python3 -m pip download -q --no-deps --no-binary=:all: -d .whl/src norse==1.1.0 || exit 1
    python3 -m pip wheel -q --no-deps -w .whl .whl/src/norse-1.1.0.tar.gz || exit 1
    rm -rf .whl/src
    ls -la .whl .whl/sj2
    exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || echo "wheel install failed" >>"$OUT/machine.txt"
else
    echo "no .whl/ carried: the peers' rows will be missing" >>"$OUT/machine.txt"
fi
if ls .whl/sj2/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site-sj2 .whl/sj2/*.whl || echo "sj2 wheel install failed" >>"$OUT/machine.txt"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, output to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/steps.txt"
    tail -n 25 "$OUT/$name.txt"
}

{
    nvidia-smi
    python3 -c "import torch, cupy, numba, numpy; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'cupy', cupy.__version__, 'numba', numba.__version__, 'numpy', \
numpy.__version__); print(torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
    g++ --version | head -n 1
} >>"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step cuda-tests 150 python3 -m pytest -q -m cuda -p no:cacheprovider -ra \
    tests/kernels/test_lif_cuda.py tests/kernels/test_ltc_cuda.py tests/kernels/test_egru.py \
    tests/kernels/test_wkv.py tests/models/test_lsm.py
step neurons 220 python3 benchmarks/neurons.py --device cuda --repeat 11 \
    --json "$OUT/neurons.json"
step neurons-sj2 60 env PYTHONPATH="/tmp/site-sj2:$PYTHONPATH" SJ_LIF_CUDA_IMPLEMENTATION=triton \
    python3 benchmarks/neurons.py --device cuda --quick --repeat 11 --peers SpikingJelly
step wkv 50 python3 benchmarks/wkv.py --device cuda --T 512 --B 16 --C 512
step ltc 50 python3 benchmarks/ltc.py
