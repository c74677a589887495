#!/usr/bin/env bash
# GPU check of cdam_d2: the CUDA tests (tests/test_cuda.py) and the GPU benchmarks (bench_gpu.py),
# printed as one table and written to $OUT (README, section GPU).
#
#   bash benchmarks/gpu_check.sh prepare   # where pip reaches a registry: fills .gpu_env/ (git-ignored)
#   bash benchmarks/gpu_check.sh           # on the GPU machine, with .gpu_env/ copied beside the code
#
# The GPU machine it is written for (an H200 lent through a device tool) has Python 3.12 with torch,
# torchvision, timm, numpy, scipy, opencv, pillow, pyyaml, tabulate, portalocker, cloudpickle, tensorboard,
# pytest and Cython, but no detectron2, open_clip, fvcore, iopath, yacs, omegaconf, termcolor,
# pycocotools or pydensecrf, and no network. `prepare` gathers those: wheels of the pure-Python
# packages, cp312 builds of pycocotools and pydensecrf2 (.gpu_env/wheels), pydensecrf2's source as a
# fallback, and detectron2's Python sources without its compiled operators (.gpu_env/detectron2;
# cdam_d2 uses none of them). Versions are those installed where `prepare` runs (the tested ones);
# timm is carried too, so the GPU run uses the same timm. The check installs the wheels into a
# temporary folder and puts it first on PYTHONPATH; nothing is installed into the system.
#
# The check is bounded: each part has its own time limit (a failing or hanging part does not stop the
# others), the whole run stays under 8 minutes on an H200, and everything it prints also goes to
# $OUT/gpu_check.log, the table to $OUT/gpu_table.md (OUT defaults to output/gpu_check).
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ENV_DIR=$REPO/.gpu_env

# Pure-Python packages the GPU machine lacks, by distribution name.
PURE_PACKAGES="open_clip_torch ftfy wcwidth timm yacs fvcore iopath omegaconf antlr4-python3-runtime termcolor"
BINARY_PACKAGES="pycocotools"          # cp312 manylinux wheels on PyPI
SOURCE_PACKAGES="pydensecrf2"          # source only on PyPI: built here for cp312, rebuilt there if needed
TARGET_PYTHON=3.12
BUILD_PYTHON=${BUILD_PYTHON:-python$TARGET_PYTHON}  # a Python 3.12 here, to build pydensecrf2's wheel

installed_version() {
    python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"
}

prepare() {
    set -e
    local work
    work=$(mktemp -d)
    trap "rm -rf '$work'" EXIT
    rm -rf "$ENV_DIR"
    mkdir -p "$ENV_DIR/wheels" "$ENV_DIR/src" "$work/download"
    local pins=() name
    for name in $PURE_PACKAGES; do pins+=("$name==$(installed_version "$name")"); done
    echo "pure-Python packages: ${pins[*]}"
    python3 -m pip download -q --no-deps -d "$work/download" "${pins[@]}"
    for archive in "$work"/download/*; do
        case "$archive" in
            *.whl) mv "$archive" "$ENV_DIR/wheels/" ;;
            *) python3 -m pip wheel -q --no-deps -w "$ENV_DIR/wheels" "$archive" ;;  # sdist -> py3 wheel
        esac
    done
    pins=()
    for name in $BINARY_PACKAGES; do pins+=("$name==$(installed_version "$name")"); done
    echo "cp${TARGET_PYTHON/./} wheels: ${pins[*]}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$ENV_DIR/wheels" "${pins[@]}"
    for name in $SOURCE_PACKAGES; do
        local pin="$name==$(installed_version "$name")"
        python3 -m pip download -q --no-deps --no-binary=:all: -d "$ENV_DIR/src" "$pin"
        if [ "$("$BUILD_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$TARGET_PYTHON" ]; then
            echo "building $pin with $BUILD_PYTHON"
            "$BUILD_PYTHON" -m pip wheel -q --no-deps -w "$ENV_DIR/wheels" "$ENV_DIR"/src/"$name"-*
        else
            echo "no Python $TARGET_PYTHON here (set BUILD_PYTHON): $pin will be built on the GPU machine from .gpu_env/src"
        fi
    done
    # detectron2 (not on PyPI): its Python package as installed here, without compiled extensions.
    python3 - "$ENV_DIR/detectron2" <<'EOF'
import os, shutil, sys
import detectron2
source = os.path.dirname(detectron2.__file__)
target = os.path.join(sys.argv[1], "detectron2")
skip = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc")
def ignore(folder, names):  # leave out links to folders outside the package (model_zoo/configs)
    return set(skip(folder, names)) | {n for n in names if os.path.islink(os.path.join(folder, n))}
shutil.copytree(source, target, ignore=ignore)
print(f"detectron2 {detectron2.__version__} Python sources from {source}")
EOF
    ls "$ENV_DIR/wheels"
    if ! git -C "$REPO" check-ignore -q "$ENV_DIR"; then
        echo "WARNING: .gpu_env is not ignored by git; add /.gpu_env/ to .gitignore" >&2
    fi
    echo "$(du -sh "$ENV_DIR" | cut -f1) in $ENV_DIR. On the device tool: run with carry [\".gpu_env\"] and"
    echo "the command 'bash benchmarks/gpu_check.sh' (timeout_s 540 leaves room under the 10-minute limit)."
}

# Runs "$@" under a time limit (seconds), reporting its exit status; never stops the script.
part() {
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo
    echo "=== $name (limit ${limit} s)"
    timeout -k 10 "$limit" "$@"
    status=$?
    [ $status -eq 124 ] || [ $status -eq 137 ] && echo "=== $name: TIMED OUT after ${limit} s"
    echo "=== $name: exit status $status after $((SECONDS - start)) s"
    return 0
}

setup_environment() {
    local site=${TMPDIR:-/tmp}/cdam_d2_gpu_site
    if [ -d "$ENV_DIR/wheels" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$ENV_DIR"/wheels/*.whl || echo "WARNING: installing the carried wheels failed"
    else
        echo "WARNING: no $ENV_DIR (run 'bash benchmarks/gpu_check.sh prepare' and carry .gpu_env)"
    fi
    export PYTHONPATH="$REPO:$site:$ENV_DIR/detectron2${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    if ! python3 -c "import pydensecrf.densecrf" 2>/dev/null && ls "$ENV_DIR"/src/pydensecrf2-* >/dev/null 2>&1; then
        echo "building pydensecrf2 from source (the carried wheel does not load here)"
        timeout 240 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
            "$ENV_DIR"/src/pydensecrf2-* || echo "WARNING: pydensecrf2 did not build: CRF tests will fail"
    fi
    python3 - <<'EOF'
import importlib, sys
versions = []
for name in ("torch", "torchvision", "numpy", "detectron2", "open_clip", "timm", "fvcore", "pycocotools",
             "pydensecrf.densecrf", "cv2", "cdam_d2"):
    try:
        module = importlib.import_module(name)
        versions.append(f"{name} {getattr(module, '__version__', 'ok')}")
    except Exception as error:
        versions.append(f"{name} MISSING ({type(error).__name__}: {error})")
import torch
print(f"Python {sys.version.split()[0]}; " + "; ".join(versions))
print(f"CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""))
EOF
}

check() {
    local out=$1 begin=$SECONDS
    echo "cdam_d2 GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: not available"
    setup_environment
    local timeout_flag=()
    python3 -c "import pytest_timeout" 2>/dev/null && timeout_flag=(--timeout 150)
    part "CUDA tests" 210 python3 -m pytest tests/test_cuda.py -q -ra -p no:cacheprovider "${timeout_flag[@]}" \
        --junitxml="$out/cuda_tests.xml"
    part "benchmark: CDAM" 110 python3 benchmarks/bench_gpu.py cdam --json "$out/bench_cdam.json"
    part "benchmark: ClusterCAM" 100 python3 benchmarks/bench_gpu.py clustercam --repeats 10 \
        --json "$out/bench_clustercam.json"
    part "benchmark: evaluator" 45 python3 benchmarks/bench_gpu.py evaluator --json "$out/bench_evaluator.json"
    echo
    echo "=== table (also in $out/gpu_table.md)"
    python3 benchmarks/bench_gpu.py table "$out"/bench_*.json --tests "$out/cuda_tests.xml" \
        --expect "$out/bench_cdam.json" "$out/bench_clustercam.json" "$out/bench_evaluator.json" \
        --markdown "$out/gpu_table.md"
    echo
    echo "GPU check finished in $((SECONDS - begin)) s"
}

case "${1:-check}" in
    prepare) prepare ;;
    check)
        OUT_DIR=${OUT:-$REPO/output/gpu_check}
        mkdir -p "$OUT_DIR"
        check "$OUT_DIR" 2>&1 | tee "$OUT_DIR/gpu_check.log"
        ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [prepare|check]" >&2; exit 2 ;;
esac
