#!/usr/bin/env bash
# LoRA Recycle on the example images (~3 min on a 2-core CPU): train a small zoo of two adapters
# (noise, low light) on synthetic degradations of the example clean photos, then handle a *new*
# degradation (heavier noise) from two example pairs with `colora adapt` (no training),
# and let `restore --task auto` pick an adapter per image with no examples at all.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[dev]"
export COLORA_HOME="${COLORA_HOME:-$PWD/.colora-recycle-example}"
work="examples-out/recycle"
rm -rf "$work"

# Synthetic pairs from the example clean photos (4 train + 2 val each; the new task gets 2 + 2).
python3 - "$work" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

work = Path(sys.argv[1])
clean = sorted(Path("examples/rain").glob("*/norain/*.png"))
rng = np.random.default_rng(0)
kinds = {
    "noise": lambda x: x + rng.normal(0, 25, x.shape),
    "dark": lambda x: 255 * (0.35 * x / 255) ** 1.4,
    "heavy-noise": lambda x: x + rng.normal(0, 40, x.shape),
}
for kind, degrade in kinds.items():
    for i, path in enumerate(clean):
        part = "val" if i >= 4 else "train"
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        for sub, img in (("input", degrade(x)), ("target", x)):
            (work / kind / part / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)).save(work / kind / part / sub / path.name)
EOF

colora init --no-starters   # the zoo is the two adapters trained below
for task in noise dark heavy-noise; do
  if colora task show "$task" >/dev/null 2>&1; then colora task rm "$task" --yes; fi  # re-runs start clean
done
for task in noise dark; do
  colora task add "$task" "$work/$task/train" --val "$work/$task/val"
  colora train "$task" --steps "${STEPS:-150}" --rank 4
done

# A new degradation, two example pairs, no training:
colora task add heavy-noise "$work/heavy-noise/train" --val "$work/heavy-noise/val"
colora adapt heavy-noise --pairs 2
colora eval heavy-noise

# No examples at all: one adapter per image, chosen from what the image looks like.
mkdir -p "$work/photos"
for f in "$work/noise/val/input/"*; do cp "$f" "$work/photos/noise-$(basename "$f")"; done
for f in "$work/dark/val/input/"*; do cp "$f" "$work/photos/dark-$(basename "$f")"; done
colora restore --task auto "$work/photos" -o "$work/restored" --overwrite
colora list
echo "Restored images are in $work/restored/ (store: $COLORA_HOME)"
