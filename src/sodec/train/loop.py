"""The training loop on accelerate: one CPU, one GPU, or many GPUs/nodes through ``accelerate launch``.

    sodec train configs/nano/stage1-rd.yaml                      # here
    accelerate launch --num_processes 8 -m sodec.cli train configs/paper/stage3-rate0.yaml

A run folder (``out``) holds ``train-config.yaml``, ``log.csv`` (every ``log_every`` steps), ``val.csv`` and
``samples/step-N/`` (every ``val.every`` steps), ``checkpoints/step-N/`` and, at the end, ``final/``
(the stage's export: a model folder, the VAE, or a complete base folder).  Starting a run whose folder has
checkpoints resumes from the newest one and continues exactly as if never interrupted.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from sodec.models.placement import build_on
from sodec.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from sodec.train.config import ConfigError, TrainConfig
from sodec.train.data import RandomCrops, StreamingCrops, StreamSampler, validation_crops
from sodec.train.discriminators import (
    adaptive_weight,
    build_discriminator,
    diffaugment,
    discriminator_loss,
    generator_loss,
    parse_diffaugment,
)
from sodec.train.losses import lmbda_at
from sodec.train.stages import build_stage, cast_frozen_bases


def _param_groups(stage: torch.nn.Module, prior_lr_scale: float) -> list[dict]:
    """The trainable parameters; ẑ's factorized density (not its quantiles) in a group of its own lr scale."""
    params = stage.trainable_parameters()
    if prior_lr_scale == 1.0:  # one group in the usual order (older checkpoints' optimizer state fits)
        return [{"params": params, "lr_scale": 1.0}]
    prior_ids = {id(p) for n, p in stage.named_parameters() if ".entropy_bottleneck." in n}
    prior = [p for p in params if id(p) in prior_ids]
    rest = [p for p in params if id(p) not in prior_ids]
    return [{"params": rest, "lr_scale": 1.0}, {"params": prior, "lr_scale": prior_lr_scale}]


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to ``lr_end``."""
    o = config.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.lr_end is None:
        return o.lr
    t = (step - o.warmup_steps) / max(1, config.steps - o.warmup_steps)
    return o.lr_end + (o.lr - o.lr_end) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1009 + micro * 101 + rank) % 2**63


#: columns of ``log.csv``/``val.csv`` renamed since older runs were written: old name -> current name.  ``bpp``
#: was the training log's likelihood estimate of the rate (never a file's bytes), named like the real bpp
RENAMED_COLUMNS = {"bpp": "bpp_estimate"}


def read_csv_log(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run's ``log.csv`` or ``val.csv``, with old column names (:data:`RENAMED_COLUMNS`) renamed."""
    with Path(path).open(newline="") as f:
        return [{RENAMED_COLUMNS.get(k, k): v for k, v in row.items()} for row in csv.DictReader(f)]


class CsvLog:
    """Append rows to a CSV file; the header is taken from the first row written to a new file.

    A file begun by an older version keeps its header: a value whose column was renamed since
    (:data:`RENAMED_COLUMNS`) is written under the old name there, so a resumed run's log stays one table.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            with path.open() as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        old_names = {v: k for k, v in RENAMED_COLUMNS.items() if k in self.fields and v not in self.fields}
        row = {old_names.get(k, k): v for k, v in row.items()}
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _truncate_log(path: Path, step: int) -> None:
    """Drop rows after ``step`` (written by a run that died before its next checkpoint)."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def _save_images(folder: Path, name: str, images: dict[str, torch.Tensor]) -> None:
    from PIL import Image

    from sodec.imageio import PNG_COMPRESS_LEVEL

    folder.mkdir(parents=True, exist_ok=True)
    for kind, img in images.items():
        array = (img[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        Image.fromarray(array).save(folder / f"{name}-{kind}.png", compress_level=PNG_COMPRESS_LEVEL)


def train(
    config: TrainConfig,
    progress: bool = True,
    stop_at: int | None = None,
    time_limit: float | None = None,
    save: bool = True,
    init_on_device: bool | None = None,
    cast_bases: bool | None = None,
) -> Path:
    """Run (or resume) one stage; returns the run folder.  ``final/`` is written when ``config.steps`` is reached.

    ``stop_at`` (a step) or ``time_limit`` (seconds) end this invocation early with a checkpoint, to be resumed
    later by the same command (e.g. a GPU lent in 10-minute chunks); the schedules still span ``config.steps``.
    ``save=False`` writes no checkpoint and no export (timing runs: benchmarks/gpu_check.py).
    The stage and the discriminator are built through :func:`sodec.models.placement.build_on` on the
    accelerator's device, checked to be entirely there; ``init_on_device`` (default: with ``model.random_bases``,
    whose random initialisation of a paper-scale base is far faster on a GPU) runs their constructors with that
    device as torch's default, otherwise they are built on the CPU and moved.  ``cast_bases`` casts the frozen
    bases to an fp16/bf16 ``precision`` (default: on CUDA only; the GPU check's dry run sets it on the CPU).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm import tqdm

    acc = Accelerator(
        mixed_precision=config.precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    out = Path(config.out)
    rank, world = acc.process_index, acc.num_processes
    torch.manual_seed(config.seed)  # model initialisation
    if init_on_device is None:
        init_on_device = config.model.random_bases
    stage = build_on(acc.device, lambda: build_stage(config), init_on_device)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.precision)
    if cast_bases is None:
        cast_bases = acc.device.type == "cuda"
    if half is not None and cast_bases:  # frozen bases in the training precision (by default on a GPU only)
        cast_frozen_bases(stage, half)
    o = config.optim
    optimizers = {"opt": torch.optim.AdamW(_param_groups(stage, o.prior_lr_scale), lr=o.lr, betas=o.betas,
                                           weight_decay=o.weight_decay)}  # fmt: skip
    if aux := stage.aux_parameters():
        optimizers["aux"] = torch.optim.Adam(aux, lr=o.aux_lr)
    disc, adv = None, config.loss
    if adv.adversarial > 0:
        if stage.cond_channels is None:
            raise ConfigError(f"stage {config.stage} has no adversarial term (loss.adversarial must be 0)")
        if adv.adversarial_adaptive and stage.last_layer() is None:
            raise ConfigError(f"stage {config.stage}: loss.adversarial_adaptive needs a trained last layer of x̂")
        disc = build_on(acc.device, lambda: build_discriminator(adv.discriminator, stage.cond_channels,
                                                                config.model.random_bases), init_on_device)  # fmt: skip
        disc_params = [p for p in disc.parameters() if p.requires_grad]
        optimizers["disc"] = torch.optim.Adam(disc_params, lr=o.disc_lr, betas=(0.5, 0.999))
    augment = parse_diffaugment(adv.diffaugment)
    # log.csv's header comes from its first row: name G's columns before adversarial_start fills them
    adv_columns = {"g_adv": "", **({"adv_weight": ""} if adv.adversarial_adaptive else {})} if disc else {}

    step = 0
    if checkpoints := list_checkpoints(out / "checkpoints"):
        step, state = load_checkpoint(checkpoints[-1], optimizers)
        stage.load_checkpoint_state({k: v for k, v in state.items() if not k.startswith("disc.")})
        if disc is not None:
            disc_state = {k[5:]: v for k, v in state.items() if k.startswith("disc.")}
            if missing := set(disc.checkpoint_state()) - set(disc_state):
                raise ConfigError(f"{checkpoints[-1]}: no {adv.discriminator} discriminator in it ({min(missing)})")
            disc.load_state_dict(disc_state, strict=False)
        if acc.is_main_process:
            acc.print(f"resuming {out} from {checkpoints[-1].name}")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train-config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        for name in ("log.csv", "val.csv"):
            _truncate_log(out / name, step)

    if config.data.streaming:  # listed now, decoded per sample in the DataLoader workers
        data = StreamingCrops(config.data.train, config.data.crop, config.data.max_side, config.data.min_scale,
                              config.data.flip, config.seed, config.data.augment())  # fmt: skip
        acc.print(f"data: {data.n_photos} photos listed under {config.data.train} (streaming)")
    else:
        data = RandomCrops(config.data.train, config.data.crop, config.data.max_side, config.data.min_scale,
                           config.data.flip, config.seed, config.data.augment())  # fmt: skip
    per_step = config.data.batch_size * o.grad_accum
    loader = DataLoader(
        data,
        batch_size=config.data.batch_size,
        sampler=StreamSampler(step * per_step * world, rank, world),
        num_workers=config.data.workers,
    )
    val = []
    if config.data.val and acc.is_main_process:
        val = validation_crops(config.data.val, config.val.images, config.val.size, config.data.max_side)

    stage_p = acc.prepare(stage)
    disc_p = acc.prepare(disc) if disc is not None else None
    opts = {k: acc.prepare(v) for k, v in optimizers.items()}
    params = stage.trainable_parameters()
    log = CsvLog(out / "log.csv") if acc.is_main_process else None
    val_log = CsvLog(out / "val.csv") if acc.is_main_process else None

    def checkpoint(at: int) -> None:
        if not save:
            return
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = dict(stage.checkpoint_state())
            if disc is not None:
                state.update({f"disc.{k}": v for k, v in disc.checkpoint_state().items()})
            save_checkpoint(out / "checkpoints", at, state, optimizers, config.keep_checkpoints)

    def validate(at: int) -> None:
        if not val:
            return
        stage.eval()
        rows = []
        for name, x in val:
            with acc.autocast():  # a no-op without mixed precision; needed with frozen bases in fp16/bf16
                metrics, images = stage.validate(x.to(acc.device))
            rows.append(metrics)
            val_log.write({"step": at, "image": name, **metrics})
            _save_images(out / "samples" / f"step-{at:07d}", name, images)
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        val_log.write({"step": at, "image": "mean", **mean})
        acc.print(f"step {at} validation: " + ", ".join(f"{k} {v:.4g}" for k, v in mean.items()))
        stage.train()

    stage.train()
    batches = iter(loader)
    bar = tqdm(total=config.steps, initial=step, disable=not (progress and acc.is_main_process), unit="step")
    t0 = time.time()
    skipped = 0
    while step < config.steps:
        lr = learning_rate(config, step)
        for group in opts["opt"].param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before the field have none
        lmbda = lmbda_at(config.loss, step, config.steps)
        adversarial = disc is not None and step >= adv.adversarial_start
        logs: dict[str, float] = {}
        for micro in range(o.grad_accum):
            torch.manual_seed(_step_seed(config.seed, step, micro, rank))
            x = next(batches).to(acc.device)
            with acc.autocast():
                result = stage_p(x, lmbda)
                loss = result["loss"] / o.grad_accum
                if adversarial:  # D's weights get gradients here too; they are cleared before D's own step
                    fake = diffaugment(result["x_hat"], augment) if augment else result["x_hat"]
                    g = generator_loss(acc.unwrap_model(disc_p)(fake, result["cond"]), adv.adversarial_loss)
                    weight = adv.adversarial
                    if adv.adversarial_adaptive:
                        weight = weight * adaptive_weight(result["loss"], g, stage.last_layer())
                        logs["adv_weight"] = logs.get("adv_weight", 0.0) + float(weight) / o.grad_accum
                    loss = loss + weight * g / o.grad_accum
                    logs["g_adv"] = logs.get("g_adv", 0.0) + g.item() / o.grad_accum
            acc.backward(loss)
            for k, v in result.items():
                if k not in ("x_hat", "cond") and v.ndim == 0:
                    logs[k] = logs.get(k, 0.0) + v.item() / o.grad_accum
            if disc is not None:
                opts["disc"].zero_grad()
                with acc.autocast():
                    x_real, x_fake = x, result["x_hat"].detach().float()
                    if augment:
                        x_real, x_fake = diffaugment(x_real, augment), diffaugment(x_fake, augment)
                    d = discriminator_loss(disc_p(x_real, result["cond"]), disc_p(x_fake, result["cond"]),
                                           adv.adversarial_loss)  # fmt: skip
                acc.backward(d)
                opts["disc"].step()
                logs["d_loss"] = logs.get("d_loss", 0.0) + d.item() / o.grad_accum
        if o.grad_clip:
            acc.clip_grad_norm_(params, o.grad_clip)
        opts["opt"].step()
        opts["opt"].zero_grad()
        if "aux" in opts and (aux_loss := acc.unwrap_model(stage_p).aux_loss()) is not None:
            opts["aux"].zero_grad()
            acc.backward(aux_loss)
            opts["aux"].step()
            logs["aux"] = aux_loss.item()
        step += 1
        bar.update()
        bar.set_postfix({k: f"{logs[k]:.4g}" for k in ("loss", "bpp_estimate", "psnr", "eps_mse") if k in logs})
        if log is not None and (step % config.log_every == 0 or step == config.steps):
            row = {"step": step, "lr": lr, "lmbda": lmbda, **adv_columns, **logs, "seconds": round(time.time() - t0, 1)}
            if isinstance(data, StreamingCrops):  # photos this process and its workers skipped so far
                counts = data.skipped()
                row["skipped"] = sum(counts.values())
                if row["skipped"] != skipped:
                    skipped = row["skipped"]
                    acc.print(f"data: {skipped} photos skipped so far ({counts['unreadable']} unreadable, "
                              f"{counts['too_small']} smaller than {config.data.crop}x{config.data.crop})")  # fmt: skip
            log.write(row)
        interrupt = step == stop_at or (time_limit is not None and time.time() - t0 > time_limit)
        if step % config.checkpoint_every == 0 or step == config.steps or interrupt:
            checkpoint(step)
        if config.val.every and (step % config.val.every == 0 or step == config.steps):
            if acc.is_main_process:
                validate(step)
        if interrupt and step < config.steps:
            bar.close()
            acc.print(f"stopped at step {step} of {config.steps}; run the same command again to resume")
            return out
    bar.close()

    if save and acc.is_main_process:  # export (again, if a resumed run went further than an earlier export)
        stage.cpu().eval()  # the coder's tables are derived on the CPU (exact integer path)
        export_batches = [data[i][None] for i in range(min(16, 4 * config.data.batch_size))]
        tmp, final, old = out / ".tmp-final", out / "final", out / ".old-final"
        for folder in (tmp, old):
            shutil.rmtree(folder, ignore_errors=True)
        tmp.mkdir(parents=True)
        stage.export(tmp, export_batches)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        acc.print(f"exported {final}")
    acc.wait_for_everyone()
    return out
