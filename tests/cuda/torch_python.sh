# shellcheck shell=sh
# Sourced by the tests/cuda/*.sh scripts that run PyTorch: sets PY to the first python3 (PYTHON3,
# then the PATH's, then Debian's) that imports torch and sees at least TORCH_GPUS (default 1) CUDA
# devices, or exits 77 (skip) saying so.
PY=
for p in ${PYTHON3:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 &&
        "$p" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() >= ${TORCH_GPUS:-1} else 1)" \
            >/dev/null 2>&1; then
        PY=$(command -v "$p")
        break
    fi
done
if [ -z "$PY" ]; then
    echo "SKIP: no python3 that imports torch and sees ${TORCH_GPUS:-1} GPU(s)"
    exit 77
fi
