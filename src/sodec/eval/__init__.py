"""Evaluation (docs/evaluation.md): metrics, classical baselines, Bjøntegaard deltas and the `sodec eval` run.

- :mod:`sodec.eval.metrics` — PSNR, MS-SSIM, LPIPS (VGG/Alex), DISTS, FID/KID on 256×256 patches.
- :mod:`sodec.eval.baselines` — JPEG, WebP, AVIF, HEIC, JPEG XL, JPEG 2000 driven to a target bpp.
- :mod:`sodec.eval.bdrate` — BD-rate and BD-quality (piecewise cubic).
- :mod:`sodec.eval.run` — the evaluation run: files, metrics, results.json/csv, rd.png, crops, report.md;
  it drives :mod:`~sodec.eval.settings` (options), :mod:`~sodec.eval.coding` (each image coded and measured,
  here or on Ray), :mod:`~sodec.eval.analysis` (means, BD table) and :mod:`~sodec.eval.report` (outputs).
- :mod:`sodec.eval.weights` — where metric weights live, ``sodec weights fetch`` / ``status``.
- :mod:`sodec.eval.lpips`, :mod:`sodec.eval.dists` — the networks, from offline-converted backbones.
"""
