#!/usr/bin/env bash
# The main job, end to end, on the bundled defaults (a few minutes on a 2-core CPU):
# install colora, create a store, register the example rain pairs, train the adapter,
# evaluate it on the held-out pairs and restore the held-out rainy images.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .   # what the main job uses; the test extras are ".[dev]"
export COLORA_HOME="${COLORA_HOME:-$PWD/.colora-example}"

colora init
if colora task show rain >/dev/null 2>&1; then colora task rm rain --yes; fi  # re-runs start clean
colora task add rain examples/rain/train --val examples/rain/val
colora train rain --steps "${STEPS:-300}"
colora eval rain
colora restore --task rain examples/rain/val/rain -o examples-out/rain --overwrite
colora list
echo "Restored images are in examples-out/rain/ (store: $COLORA_HOME)"
