#!/usr/bin/env bash
# The benchmark-only environment for benchmarks/torchquantum.py: TorchQuantum (the simulator of the
# authors' code) beside qtha's exact requirements, in its own venv, never in the project's .venv
# (TorchQuantum drags in qiskit and downgrades python-dateutil; nothing in qtha needs it).
#
#   TQ_VENV=/path/to/venv PYTHON=python3 bash benchmarks/torchquantum_env.sh     # default .tqenv in the checkout
#
# Every pip command that can resolve torch names torch==2.13.0 (the CPU wheel the project pins), so pip
# never swaps in a multi-GB CUDA build. qtha itself is not installed: the benchmark imports it from this
# checkout (it puts the repository root first on sys.path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TQ_VENV="${TQ_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.tqenv}"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
PY="$TQ_VENV/bin/python"
PIP=("$PY" -m pip install --quiet)

"$PYTHON" -m venv "$TQ_VENV"
"${PIP[@]}" --upgrade pip
# 1. qtha's requirements, exactly as `make setup` installs them.
"${PIP[@]}" "$TORCH" -r "$ROOT/requirements.lock.txt"
# 2. What `import torchquantum` needs (its own and torchpack's import-time dependencies), pinned.
"${PIP[@]}" "$TORCH" qiskit==2.6.2 qiskit-aer==0.18.2 qiskit-ibm-runtime==0.51.0 pathos==0.3.5 \
    pylatexenc==2.11 torchdiffeq==0.2.5 tqdm==4.70.1 loguru==0.7.3 multimethod==2.1 toml==0.10.2
# 3. TorchQuantum (the maintained fork; imports as `torchquantum`) and torchpack without their declared
#    dependencies: both require torchvision, whose only Linux wheels on PyPI are CUDA builds that cannot
#    load beside the CPU torch ("operator torchvision::nms does not exist"). torchquantum imports
#    torchvision only for its MNIST/CIFAR loaders; the benchmark stands in for those names.
#    torchpack's h5py / tensorboard / tensorpack are not imported on this path either.
"${PIP[@]}" --no-deps torchquantum-ng==0.2.0 torchpack==0.3.1
# 4. Check: a CPU torch 2.13.0, and torchquantum imports the way the benchmark imports it.
"$PY" -c 'import sys, torch; v = torch.__version__; sys.exit(0 if v.split("+")[0] == "2.13.0" and torch.version.cuda is None else f"torch {v} (cuda {torch.version.cuda}) is not the pinned CPU build")'
OMP_NUM_THREADS=1 "$PY" "$ROOT/benchmarks/torchquantum.py" --check-env
touch "$TQ_VENV/.installed"
echo "benchmark-only TorchQuantum environment ready: $TQ_VENV"
