"""Building a model on a device, and checking that all of it is there.

``with torch.device("cuda"): Model()`` is not enough: compressai's entropy models create their parameters and
buffers (``quantiles``, ``_quantized_cdf``, ``_offset``, ``_cdf_length``, the lower bounds, …) with constructors
that ignore the default device, so 27 tensors of the tiny preset stay on the CPU (docs/decisions.md, "device
placement").  :func:`build_on` is the one place where the GPU check and the training loop build their models:
it builds, moves the whole module (parameters *and* buffers) and checks with :func:`check_placement`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from sodec.errors import ModelError

M = TypeVar("M", bound=nn.Module)


class PlacementError(ModelError):
    """Some tensors of a module are not on the device it was built for."""


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` matches ``cuda:N`` for the current N (what ``.to("cuda")`` gives)."""
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index is None or b.index is None or a.index == b.index


def misplaced(module: nn.Module, device: str | torch.device) -> list[str]:
    """Names (and devices) of the module's tensors that are not on ``device``: parameters, buffers, and plain tensor
    attributes of submodules, which ``Module.to`` does not move (a cached table kept as ``self.x = tensor``)."""
    device = torch.device(device)
    found = []
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if not _same_device(t.device, device):
            found.append(f"{name} ({t.device})")
    for prefix, sub in module.named_modules():
        for key, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and not _same_device(value.device, device):
                found.append(f"{prefix + '.' if prefix else ''}{key} ({value.device}, a plain attribute)")
    return found


def check_placement(module: nn.Module, device: str | torch.device) -> None:
    """Raise :class:`PlacementError` naming every tensor of ``module`` that is not on ``device``."""
    if bad := misplaced(module, device):
        shown = ", ".join(bad[:12]) + (f" and {len(bad) - 12} more" if len(bad) > 12 else "")
        raise PlacementError(f"{len(bad)} tensor(s) of {type(module).__name__} are not on {device}: {shown}")


def build_on(device: str | torch.device, factory: Callable[[], M], init_on_device: bool = True) -> M:
    """``factory()`` (a module), entirely on ``device``, checked.

    With ``init_on_device`` the factory runs with ``device`` as torch's default device, so random initialisation
    happens there (paper scale: 1.6 B parameters, far faster on a GPU than on the CPU); whatever the factory
    still creates elsewhere is then moved by ``.to(device)``.  A tensor that ``.to`` cannot reach (a plain
    attribute) raises :class:`PlacementError` instead of surfacing later as a mixed-device error.
    """
    device = torch.device(device)
    if init_on_device and device.type != "cpu":
        with device:
            module = factory()
    else:
        module = factory()
    module = module.to(device)
    check_placement(module, device)
    return module
