"""Resumable checkpoints without pickle: tensors in ``state.safetensors``, everything else in ``state.json``.

``checkpoints/step-0000200/`` holds the stage's trainable tensors, every optimizer's state (Adam moments and
step counts) and, in JSON, the step and the optimizers' hyper-parameters.  Randomness needs no saved state:
each step reseeds from (seed, step) and the data stream is a pure function of its position.  Written to a
temporary folder and renamed, so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

PREFIX = "step-"


def _optimizer_split(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"{name}/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(name: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(name + "/"):
            _, index, field = key.split("/")
            state.setdefault(int(index), {})[field] = value
    for key, value in meta["scalars"].items():
        index, field = key.split("/")
        state.setdefault(int(index), {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path, step: int, model_state: dict[str, Tensor], optimizers: dict[str, torch.optim.Optimizer], keep: int
) -> Path:
    """Write ``folder/step-NNNNNNN`` atomically and prune all but the ``keep`` newest."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{PREFIX}{step:07d}"
    tmp = folder / f".tmp-{PREFIX}{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta: dict[str, Any] = {"step": step, "optimizers": {}}
    for name, opt in optimizers.items():
        t, m = _optimizer_split(name, opt)
        tensors.update(t)
        meta["optimizers"][name] = m
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())


def load_checkpoint(path: Path, optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, dict[str, Tensor]]:
    """Restore the optimizers in place; returns the step and the model tensors."""
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    for name, opt in optimizers.items():
        if name in meta["optimizers"]:
            opt.load_state_dict(_optimizer_join(name, tensors, meta["optimizers"][name]))
    model_state = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")}
    return int(meta["step"]), model_state
