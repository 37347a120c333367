"""(temporary) restoring example images for the report; replaced by crops kept during evaluation."""
from __future__ import annotations

import numpy as np

from core.report.images import CROP, error_crop


def restore_rgb(model, rgb: np.ndarray, *, tile: int, device="cpu") -> np.ndarray:
    """Restore one H x W x 3 float image with `model` (tiled, like `colora restore`)."""
    import torch

    from core.data.crops import to_numpy, to_tensor
    from core.inference.tiles import restore_tensor

    model.to(device).eval()
    with torch.no_grad():
        return to_numpy(restore_tensor(model, to_tensor(np.asarray(rgb, dtype=np.float32)), tile))



def example_views(models: dict, input_path, target_path, *, tile: int, device="cpu",
                  size: int = CROP) -> dict:
    """One validation pair as crops: {"box", "size", "images": {"input", <model names>..., "target"}}.

    The models restore the whole image (as evaluation does); the crop comes from `error_crop`."""
    from core.data.images import load_image

    degraded, _, _ = load_image(input_path)
    target, _, _ = load_image(target_path)
    top, left, ch, cw = error_crop(degraded, target, size)
    full = {"input": degraded}
    full.update({name: restore_rgb(m, degraded, tile=tile, device=device) for name, m in models.items()})
    full["target"] = target
    return {"box": (top, left, ch, cw), "size": (degraded.shape[1], degraded.shape[0]),
            "images": {name: img[top : top + ch, left : left + cw] for name, img in full.items()}}

