"""Import compressai's entropy models without its package ``__init__``.

compressai 1.2.8's ``__init__`` imports its point-cloud datasets (torch_geometric, pandas, requests): about
6 s of start-up on this project's machines and three dependencies sodec never uses.  sodec needs only
``compressai.entropy_models`` (EntropyBottleneck, GaussianConditional), GDN (``compressai.layers.gdn``) and the
rANS coder ``compressai.ans``,
so when compressai has not been imported yet we register a bare package object with the two functions those
modules ask the package for, and import just them.  If compressai was already imported (by user code),
the real package is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from sodec.errors import ModelError

if "compressai" not in sys.modules:
    _spec = importlib.util.find_spec("compressai")
    if _spec is None or not _spec.submodule_search_locations:
        raise ModelError("compressai is not installed: pip install --no-deps compressai==1.2.8")
    _pkg = types.ModuleType("compressai")
    _pkg.__path__ = list(_spec.submodule_search_locations)
    _pkg.__file__ = _spec.origin
    _pkg.available_entropy_coders = lambda: ["ans"]
    _pkg.get_entropy_coder = lambda: "ans"
    sys.modules["compressai"] = _pkg

from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402
from compressai.layers.gdn import GDN  # noqa: E402  (E and Da of ``transforms: gdn``)

__all__ = ["GDN", "EntropyBottleneck", "GaussianConditional"]
