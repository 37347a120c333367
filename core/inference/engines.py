"""A merged task model outside PyTorch: ONNX export, and ONNX Runtime / OpenVINO as inference engines.

An engine is a callable on a (1, 3, H, W) float tensor that returns the restored tensor, so
`core.inference.tiles.restore_tensor` drives it like a PyTorch model. Both run on the CPU.

Each engine runs the ONNX graph it was measured fastest on (bench/speed.py, 2-core CPU, 512²):

    plain   the NAFNet with the adapter merged into its weights, as PyTorch writes it: any batch,
            height and width, standard ops only. OpenVINO fuses its per-pixel LayerNorms (ReduceMean
            over channels) into one op and beats the fast graph on it; `colora export-onnx` writes it.
    fast    core.model.fast.FastNAFNet (norm affines and residual scales folded into the convs,
            LayerNormalization on a channels_last view): ONNX Runtime runs it ~1.3x faster than
            the plain graph. One image at a time (its attention scale is folded per image).

The plain graph goes through the TorchScript exporter (under a second; the dynamo exporter
takes 10-30 s for the same graph); the fast graph only exports with dynamo. Both take any
image size: the NAFNet pads to its multiple inside the graph and crops back.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from colora.core.errors import ColoraError, InvalidInputError
from colora.core.files import atomic_write

GRAPHS = {"onnxruntime": "fast", "openvino": "plain"}  # each engine's fastest graph (module doc)
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # the module each engine imports
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}  # pip install "colora[EXTRA]"
OPSET = 18
EXACT = 1e-4  # the largest |engine - PyTorch| on an image in [0, 1] an engine may differ by


def installed(engine: str) -> bool:
    """Whether an engine's package can be imported (found without importing it: that takes a while)."""
    return engine == "torch" or importlib.util.find_spec(PACKAGES[engine]) is not None


def require(engine: str) -> None:
    if not installed(engine):
        raise InvalidInputError(
            f"--engine {engine} needs the {PACKAGES[engine]} package, which is not installed",
            hint=f'pip install "colora[{EXTRAS[engine]}]", or pass --engine torch',
        )


def merged_nafnet(backbone: nn.Module, deltas: dict[str, torch.Tensor]) -> nn.Module:
    """A plain copy of `backbone` with an adapter's deltas added to its weights (no LoRA layers):
    the graph a portable ONNX file holds. The backbone is not changed."""
    from colora.core.model.lora import lora_targets

    model = copy.deepcopy(backbone).eval()
    targets = lora_targets(model)
    with torch.no_grad():
        for path, delta in deltas.items():
            targets[path].weight += delta.to(targets[path].weight)
    return model


def build_graph(kind: str, backbone: nn.Module, deltas: dict[str, torch.Tensor]) -> nn.Module:
    """The module to export for a graph kind (`plain` or `fast`, module doc); GRAPHS[engine] is
    the kind an engine runs."""
    if kind == "fast":
        from colora.core.model.fast import FastNAFNet

        return FastNAFNet(backbone.eval(), deltas)
    if kind == "plain":
        return merged_nafnet(backbone, deltas)
    raise ValueError(f"unknown graph kind {kind!r}")


def export_onnx(graph: nn.Module, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write `graph` (a NAFNet or FastNAFNet, on the CPU) as one ONNX file, atomically, with dynamic
    height and width (and batch, for a plain NAFNet); input `image`, output `restored`."""
    from colora.core.model.fast import FastNAFNet

    graph = graph.cpu().eval()
    example = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))  # odd: the padding is traced
    with atomic_write(path, overwrite=overwrite) as tmp, _quiet(), torch.no_grad():
        try:
            if isinstance(graph, FastNAFNet):
                _export_dynamo(graph, example, tmp)
            else:
                _export_torchscript(graph, example, tmp)
        except ColoraError:
            raise
        except Exception as e:  # noqa: BLE001 - an exporter's failure is one line for the user
            raise ColoraError(
                f"PyTorch {torch.__version__} could not export the model to ONNX "
                f"({type(e).__name__}: {_first_line(e)})",
                hint="colora's own restore (`--engine torch`) needs no ONNX",
            ) from None


def _export_torchscript(graph: nn.Module, example: torch.Tensor, dest: Path) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        torch.onnx.export(
            graph,
            (example,),
            str(dest),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["restored"],
            dynamic_axes={"image": axes, "restored": axes},
        )
    except (AttributeError, NotImplementedError, RuntimeError, TypeError):
        # a PyTorch without the TorchScript exporter (deprecated): the dynamo one, slower, same graph
        _export_dynamo(graph, example, dest, batch=True)


def _export_dynamo(graph: nn.Module, example: torch.Tensor, dest: Path, *, batch: bool = False) -> None:
    any_size = torch.export.Dim.DYNAMIC
    shapes = {2: any_size, 3: any_size} | ({0: any_size} if batch else {})
    torch.onnx.export(
        graph,
        (example,),
        str(dest),
        dynamo=True,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["restored"],
        dynamic_shapes=(shapes,),
        external_data=False,
        verbose=False,
    )


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines and deprecation warnings are not for colora's users."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class OnnxRuntimeEngine:
    """An ONNX file run by ONNX Runtime on the CPU, with as many threads as PyTorch uses."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one graph, run op after op: a second pool only competes
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own unrelated exception types
            raise InvalidInputError(f"onnxruntime cannot load {Path(path).name}: {_first_line(e)}") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: _array(x)})[0])


class OpenVinoEngine:
    """An ONNX file compiled by OpenVINO for the CPU, in float32 (its default on CPUs with bf16
    units is bf16, which is not exact), tuned for one request at a time."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            self.request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
        except Exception as e:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors with long C++ traces
            raise InvalidInputError(f"openvino cannot load {Path(path).name}: {_first_line(e, last=True)}") from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # the result lives in the request's own buffer, which the next call overwrites: copied out
        return torch.from_numpy(self.request.infer({0: _array(x)})[0].copy())


def _first_line(e: Exception, *, last: bool = False) -> str:
    """One line of an engine's or exporter's message (OpenVINO's meaningful line is its last)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return lines[-1 if last else 0][:200]


def _array(x: torch.Tensor):
    import numpy as np

    return np.ascontiguousarray(x.detach().cpu().float().numpy())  # a tile is a strided view of the image


def load_engine(engine: str, path: str | os.PathLike, threads: int | None = None):
    """An ONNX file as a callable for `restore_tensor`."""
    require(engine)
    return {"onnxruntime": OnnxRuntimeEngine, "openvino": OpenVinoEngine}[engine](path, threads)


def probe_image(h: int = 37, w: int = 53) -> torch.Tensor:
    """A fixed (1, 3, h, w) image in [0, 1], of a size the network pads (exercises the padding)."""
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def max_abs_error(engine, model: nn.Module, image: torch.Tensor | None = None) -> float:
    """max |engine(image) - model(image)| on a (1, 3, H, W) image (default `probe_image()`)."""
    image = probe_image() if image is None else image
    device = next(model.parameters()).device
    ours = model(image.to(device)).float().cpu()
    theirs = engine(image)
    if theirs.shape != ours.shape:
        return float("inf")
    return float((theirs - ours).abs().max())
