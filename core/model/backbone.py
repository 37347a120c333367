"""NAFNet-style restoration backbone (Chen et al., ECCV 2022), small and readable.

Blocks start as the identity (beta = gamma = 0), the net predicts a residual on its input,
and inputs of any size are padded to a multiple of 2**len(enc_blocks) and cropped back.
Module paths and the forward are the official NAFNet's (BasicSR), so its checkpoints load as
they are (core/interop/basicsr.py); only the padding differs by default (`pad_mode`).
Module paths are stable (`encoders.2.0.conv4`) because rank plans and adapters name them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.errors import InvalidInputError

# Bounds on configs read from files: generous for real NAFNets (the official ones are width 32-64,
# at most 28 blocks a stage), small enough that a hostile config cannot ask for absurd models.
LIMITS = {"width": 256, "levels": 6, "blocks": 64, "channels": 4096}
# colora pads with the border pixels (no dark seam at the right/bottom edges); the official NAFNet
# pads with zeros, which its imported checkpoints keep so that they compute what they were trained for
PAD_MODES = ("replicate", "zeros")


@dataclass(frozen=True)
class BackboneConfig:
    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 1, 2)
    middle_blocks: int = 2
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)
    in_channels: int = 3
    pad_mode: str = "replicate"

    def __post_init__(self):
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError("enc_blocks and dec_blocks must have the same length")
        # tuples, also when rebuilt from JSON lists
        object.__setattr__(self, "enc_blocks", tuple(self.enc_blocks))
        object.__setattr__(self, "dec_blocks", tuple(self.dec_blocks))

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this."""
        return 2 ** len(self.enc_blocks)

    def to_json(self) -> str:
        data = asdict(self)
        if data["pad_mode"] == "replicate":  # the default stays implicit: configs written before it are unchanged
            del data["pad_mode"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BackboneConfig":
        return cls(**json.loads(text))

    @classmethod
    def parse(cls, text: str, source: str = "the backbone") -> "BackboneConfig":
        """A config read from a file (untrusted): JSON of the right fields and types, sizes in bounds."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise InvalidInputError(f"{source} has an unreadable backbone config (not JSON: {e})") from None
        fields = {"width": int, "enc_blocks": list, "middle_blocks": int, "dec_blocks": list, "in_channels": int}
        optional = {"in_channels", "pad_mode"}
        if not isinstance(data, dict) or set(data) - set(fields) - optional or set(fields) - set(data) - optional:
            raise InvalidInputError(
                f"{source} has an unreadable backbone config (expected the fields {', '.join(fields)}, pad_mode)"
            )
        if data.get("pad_mode", "replicate") not in PAD_MODES:
            raise InvalidInputError(
                f"{source} has an unreadable backbone config (pad_mode must be one of {', '.join(PAD_MODES)})"
            )
        for key, kind in fields.items():
            value = data.get(key, 3)
            items = value if kind is list and isinstance(value, list) else [value]
            if not isinstance(value, kind) or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
                raise InvalidInputError(
                    f"{source} has an unreadable backbone config ({key} must be "
                    f"{'a list of whole numbers' if kind is list else 'a whole number'})"
                )
        try:
            config = cls(**data)
        except ValueError as e:
            raise InvalidInputError(f"{source} has an unreadable backbone config ({e})") from None
        config.check(source)
        return config

    def check(self, source: str = "the backbone") -> None:
        """Sizes a CPU or a GPU can hold: refused before any model is built."""
        stages = (*self.enc_blocks, self.middle_blocks, *self.dec_blocks)
        problems = [
            (not 1 <= self.width <= LIMITS["width"], f"width {self.width} (1 to {LIMITS['width']})"),
            (self.in_channels != 3, f"in_channels {self.in_channels} (colora restores RGB: 3)"),
            (self.pad_mode not in PAD_MODES, f"pad_mode {self.pad_mode!r} ({' or '.join(PAD_MODES)})"),
            (
                not 1 <= len(self.enc_blocks) <= LIMITS["levels"],
                f"{len(self.enc_blocks)} encoder levels (1 to {LIMITS['levels']})",
            ),
            (any(not 0 <= n <= LIMITS["blocks"] for n in stages), f"a stage of more than {LIMITS['blocks']} blocks"),
            (
                self.width * 2 ** len(self.enc_blocks) > LIMITS["channels"],
                f"{self.width * 2 ** len(self.enc_blocks)} channels in the middle (at most {LIMITS['channels']})",
            ),
        ]
        bad = [text for wrong, text in problems if wrong]
        if bad:
            raise InvalidInputError(f"{source} has a backbone config out of bounds: {'; '.join(bad)}")


PRESETS: dict[str, BackboneConfig] = {
    "tiny": BackboneConfig(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
    "small": BackboneConfig(),
    # width 32, one block a stage: the best adapted quality per CPU-minute of adapter training of the
    # sizes measured (bench/backbone_size.py, BENCHMARKS.md)
    "medium": BackboneConfig(width=32, enc_blocks=(1, 1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
    "base": BackboneConfig(width=32, enc_blocks=(1, 1, 1, 28), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
}


def preset(name: str) -> BackboneConfig:
    """A named size, or a clear error listing the names."""
    if name not in PRESETS:
        raise InvalidInputError(f"unknown backbone config {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every pixel (autograd handles the backward).

    A channels_last input (training, core/model/fast.py) takes one fused `F.layer_norm` over the last
    dimension of a free (N, H, W, C) view; a default-format input takes NAFNet's reference
    formulation, which is also the "eager PyTorch" baseline of bench/speed.py.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            xp = x.permute(0, 2, 3, 1)
            return F.layer_norm(xp, (xp.shape[-1],), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 2C, H, W) -> (N, C, H, W)
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        dw = 2 * c
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)  # depthwise: not a LoRA target
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        # zero scales: every block starts as the identity
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(self.norm1(inp)))
        x = self.sg(x)
        x = x * self.sca(x)
        y = inp + self.conv3(x) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    def __init__(self, config: BackboneConfig = BackboneConfig()):
        super().__init__()
        self.config = config
        c = config.width
        self.intro = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.ending = nn.Conv2d(c, config.in_channels, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for n in config.enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(c) for _ in range(config.middle_blocks)])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W), any H, W
        _, _, h, w = inp.shape
        m = self.config.multiple
        mode = "replicate" if self.config.pad_mode == "replicate" else "constant"
        x_in = F.pad(inp, (0, (m - w % m) % m, 0, (m - h % m) % m), mode=mode)
        if inp.is_contiguous(memory_format=torch.channels_last) and not inp.is_contiguous():
            x_in = x_in.contiguous(memory_format=torch.channels_last)  # padding keeps channels_last
        x = self.intro(x_in)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x) + x_in
        return x[:, :, :h, :w]


def build_backbone(config: BackboneConfig, seed: int | None = 0) -> NAFNet:
    """A randomly initialised backbone; `seed` makes it reproducible."""
    if seed is None:
        return NAFNet(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NAFNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
