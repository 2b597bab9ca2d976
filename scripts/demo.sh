#!/usr/bin/env bash
# The main job: installs what is missing, builds (release), and runs it.
# Until `vdma demo` exists it runs the DMA benchmark summary: one JSON object of headline
# figures (bounce vs memcpy, direct vs raw address, small map+unmap cost, 2-thread scaling).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/bench/vdma_dma_summary "$@"
