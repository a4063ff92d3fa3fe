#!/usr/bin/env bash
# The design-card sweep on the embedded default (SmolLM2-135M + synthetic maths, 2 CPU cores):
# every adapter that exists today x two sample sizes, one JSON record per job in results/runs/default/.
# Usage: bash experiments/design_card.sh [extra hydra overrides, e.g. seed=1,2,3]
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTERS="${ADAPTERS:-lora,none}"
exec .venv/bin/python -m qtha.run -m "adapter=${ADAPTERS}" data.size=300,3000 "$@"
