"""The training loop: seeds, AdamW + schedule, clipping, AMP, DDP, metrics, checkpoints, plots.

``summary = train(cfg)`` trains ``cfg.model`` on ``cfg.dataset`` and writes a run folder::

    <out_dir>/<run_name>/
        config.json         the resolved configuration
        metrics.jsonl       one JSON object per epoch (train/test loss, accuracy, spikes per
                            sample, throughput, learning rate, cumulative training seconds)
        checkpoint.pt       the latest epoch (see spiking.training.checkpoint), atomic
        curves.png  confusion.png  raster.png  summary.json  report.md

``train(resume=RUN_OR_CHECKPOINT)`` continues an interrupted run from its last checkpoint with
the stored configuration; on CPU the final weights equal those of an uninterrupted run.

Reproducibility: the shuffling order of epoch ``e`` is ``DistributedSampler(seed, epoch=e)``
(a pure function of both), every RNG state is checkpointed, and ``deterministic=True`` turns on
``torch.use_deterministic_algorithms``. Under torchrun each rank takes ``batch_size /
world_size`` samples of every global batch, gradients are averaged by DDP, and metrics are
summed over ranks, so the loss curve matches a single process with the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from spiking.models import delays
from spiking.neurons.base import LOG, TIME_CONSTANTS
from spiking.training import checkpoint as ckpt
from spiking.training import distributed as D
from spiking.training.config import Config
from spiking.training.metrics import Meter, append_jsonl, confusion_matrix, rewrite_jsonl

# models whose time constants are in seconds: they get the dataset's bin width as `dt`
MODELS_WITH_DT = ("csnn", "rsnn", "lsm", "ltc", "cfc")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def unpack(out):
    """Model output -> (logits, activity dict or None)."""
    if isinstance(out, torch.Tensor):
        return out, None
    logits, aux = out[0], (out[1] if len(out) > 1 else None)
    return logits, aux if isinstance(aux, dict) else None


def batch_spikes(activity) -> float | None:
    """Total spikes in a batch over every recorded layer (None if nothing recorded)."""
    if not activity:
        return None
    return float(sum(float(s.detach().float().sum()) for s in activity.values()))


def build_model(cfg: Config, data) -> torch.nn.Module:
    from spiking.models.registry import get_model

    kw = dict(cfg.model_args)
    if cfg.model.lower() in MODELS_WITH_DT:
        kw.setdefault("dt", data.dt)
    return get_model(cfg.model, input_shape=data.input_shape, n_classes=data.n_classes, **kw)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: every parameter decays by ``weight_decay`` except learnable time constants
    (``log_tau_*``), for which decay would pull every tau towards exp(0) = 1 s, a prior with no
    meaning, and learnt delay positions (``delay_pos``), which decay would pull to delay 0 and
    which train at ``lr_scale`` = their module's ``pos_lr_scale`` (default
    :data:`spiking.models.delays.POS_LR_SCALE`) x the lr, one group per scale (the scheduler
    scales each group's lr alike)."""
    taus = {LOG + t for t in TIME_CONSTANTS}
    pos_scale = {id(m.delay_pos): m.pos_lr_scale for m in model.modules()
                 if isinstance(m, delays.LearntDelays)}
    decay, keep, pos = [], [], {}
    for name, p in model.named_parameters():
        last = name.rpartition(".")[2]
        if last == "delay_pos":
            pos.setdefault(pos_scale.get(id(p), delays.POS_LR_SCALE), []).append(p)
        else:
            (keep if last in taus else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    for scale, ps in pos.items():  # learnt synaptic delays: no decay, faster lr
        groups.append({"params": ps, "weight_decay": 0.0, "lr_scale": scale})
    return groups


def make_scheduler(cfg: Config, opt, total_steps: int):
    if cfg.schedule == "onecycle":
        # torch's OneCycleLR divides by the warm-up length in steps, pct_start * total - 1:
        # a run of a few steps (tiny data, one epoch) needs at least 1.5 warm-up steps
        total = max(total_steps, 3)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups],      # cfg.lr x lr_scale
            total_steps=total,
            pct_start=min(max(cfg.warmup_frac, 1.5 / total), 1 - 1 / total))
    warm = int(cfg.warmup_frac * total_steps)

    def factor(step):
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total_steps - warm, 1)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def amp_setup(cfg: Config, device: torch.device):
    """(autocast context factory, GradScaler) for the run's AMP mode."""
    if device.type != "cuda" or cfg.amp == "off":
        return nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), \
        torch.amp.GradScaler("cuda", enabled=not bf16)


@torch.no_grad()
def evaluate(model, split, info: D.DistInfo, cfg: Config, n_classes: int, amp_ctx=nullcontext,
             keep_first: bool = False) -> dict:
    """Loss, accuracy, spikes per sample and confusion matrix over `split` (summed over ranks)."""
    model.eval()
    idx = np.arange(len(split))[info.rank::info.world_size]
    meter, cm, first = Meter(), torch.zeros(n_classes, n_classes, dtype=torch.long), None
    for i in range(0, len(idx), cfg.batch_size):
        x, y = split.batch(idx[i:i + cfg.batch_size], info.device)
        with amp_ctx():
            logits, act = unpack(model(x))
        logits = logits.float()
        meter.update(F.cross_entropy(logits, y).item(), logits, y, batch_spikes(act))
        cm += confusion_matrix(logits.argmax(1), y, n_classes)
        if keep_first and first is None:
            first = {"activity": {k: v[:, :1].cpu() for k, v in (act or {}).items()},
                     "label": int(y[0]), "predicted": int(logits[0].argmax())}
    sums = D.all_sum(meter.sums() + cm.flatten().tolist(), info)
    res = Meter.summarize(sums[:4], meter.has_spikes)
    res["confusion"] = sums[4:].round().long().reshape(n_classes, n_classes)
    res["first"] = first
    return res


def _run_dir(cfg: Config, info: D.DistInfo) -> Path:
    name = cfg.run_name or f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out_dir) / D.broadcast_object(name, info)


def train(cfg: Config | None = None, *, resume=None, log=print) -> dict:
    """Train (or resume) a run; returns the summary dict (also written to summary.json)."""
    state = None
    if resume is not None:
        path = ckpt.resolve(resume)
        state = ckpt.load(path)
        cfg = Config.from_dict(state["config"]).validate()
        run_dir = path.parent
    elif cfg is None:
        raise ValueError("train() needs a Config or resume=<checkpoint or run folder>")
    cfg.validate()
    info = D.setup(cfg.device)
    try:
        if resume is None:
            run_dir = _run_dir(cfg, info)
        return _train(cfg, info, run_dir, state, log if info.is_main else (lambda *a: None))
    finally:
        D.cleanup(info)


def _train(cfg: Config, info: D.DistInfo, run_dir: Path, state, log) -> dict:
    from spiking.training import data as data_mod

    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of "
                         f"processes ({info.world_size})")
    local_bs = cfg.batch_size // info.world_size
    seed_everything(cfg.seed, cfg.deterministic)
    data = data_mod.load(cfg, progress=cfg.progress and info.is_main)
    model = build_model(cfg, data).to(info.device)
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    core = model.module if info.enabled else model
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    for g in opt.param_groups:
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
    sampler = DistributedSampler(range(len(data.train)), num_replicas=info.world_size,
                                 rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=False)
    steps = math.ceil(len(sampler) / local_bs)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps)
    amp_ctx, scaler = amp_setup(cfg, info.device)
    history, start, best = [], 0, None
    if state is not None:
        core.load_state_dict(state["model"])
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise ValueError(
                f"cannot resume {run_dir}: its optimizer state does not fit this version's "
                f"parameters ({e}); checkpoints of models with learnable time constants written "
                f"before they were learnt in log space evaluate, but cannot resume") from None
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history, start, best = list(state["metrics"]), int(state["epoch"]), state.get("best")
        ckpt.set_rng_state(state["rng"])
        log(f"resuming {run_dir} after epoch {start}/{cfg.epochs}")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if state is not None:
            rewrite_jsonl(run_dir / "metrics.jsonl", history)
        log(f"run folder {run_dir}: {cfg.model} on {data.description}, "
            f"{len(data.train)} train / "
            f"{f'{len(data.val)} validation / ' if data.val is not None else ''}"
            f"{len(data.test)} test, input {data.input_shape} x "
            f"{data.train.x.shape[1]} steps, dt {data.dt * 1e3:.3g} ms, "
            f"{sum(p.numel() for p in core.parameters()):,} parameters, device {info.device}"
            f"{f', {info.world_size} processes' if info.enabled else ''}")
    train_time = history[-1]["train_time_s"] if history else 0.0
    ev = None
    for epoch in range(start, cfg.epochs):
        model.train()
        sampler.set_epoch(epoch)
        for m in core.modules():          # schedules inside the model (learnt delays' sigma)
            if hasattr(m, "set_progress"):
                m.set_progress(epoch, cfg.epochs)
        order = list(sampler)
        meter, t0 = Meter(), time.perf_counter()
        bar = None
        if cfg.progress and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       dynamic_ncols=True)
        for i in range(0, len(order), local_bs):
            x, y = data.train.batch(order[i:i + local_bs], info.device, cfg.augment_shift,
                                    cfg.augment_dilate, cfg.augment_blend)
            with amp_ctx():
                logits, act = unpack(model(x))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, "
                                         f"step {i // local_bs}; lower lr ({cfg.lr})")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            meter.update(loss.item(), logits.detach().float(), y, batch_spikes(act))
            if bar is not None:
                el = time.perf_counter() - t0
                s = Meter.summarize(meter.sums(), meter.has_spikes)
                post = {"loss": f"{s['loss']:.3f}", "acc": f"{s['accuracy']:.3f}",
                        "samples/s": f"{meter.samples * info.world_size / max(el, 1e-9):.0f}"}
                if s["spikes_per_sample"] is not None:
                    post["spk/sample"] = f"{s['spikes_per_sample']:.0f}"
                bar.set_postfix(post)
                bar.update(1)
        if bar is not None:
            bar.close()
        sums = D.all_sum(meter.sums(), info)
        epoch_s = float(D.all_sum([time.perf_counter() - t0], info)[0]) / info.world_size
        train_time += epoch_s
        tr = Meter.summarize(sums, meter.has_spikes)
        rec = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "train_spikes_per_sample": tr["spikes_per_sample"],
               "lr": opt.param_groups[0]["lr"], "epoch_time_s": epoch_s,
               "train_time_s": train_time, "samples_per_s": float(sums[3]) / epoch_s}
        last = epoch + 1 == cfg.epochs
        if last or (epoch + 1) % cfg.eval_every == 0:
            ev = evaluate(core, data.test, info, cfg, data.n_classes, amp_ctx, keep_first=last)
            rec.update(test_loss=ev["loss"], test_accuracy=ev["accuracy"],
                       test_spikes_per_sample=ev["spikes_per_sample"])
            best = ev["accuracy"] if best is None else max(best, ev["accuracy"])
            if data.val is not None:
                va = evaluate(core, data.val, info, cfg, data.n_classes, amp_ctx)
                rec.update(val_loss=va["loss"], val_accuracy=va["accuracy"],
                           val_spikes_per_sample=va["spikes_per_sample"])
        history.append(rec)
        if info.is_main:
            append_jsonl(run_dir / "metrics.jsonl", rec)
            ckpt.save(run_dir / ckpt.FILENAME, config=cfg.to_dict(), epoch=epoch + 1,
                      model=core, optimizer=opt, scheduler=sched, scaler=scaler,
                      metrics=history, best=best,
                      data={"input_shape": list(data.input_shape),
                            "n_classes": int(data.n_classes), "dt": float(data.dt),
                            "classes": [str(c) for c in data.classes]})
            log(_epoch_line(rec, cfg.epochs))
        D.barrier(info)
    if ev is None:  # resumed a finished run: evaluate once for the summary
        ev = evaluate(core, data.test, info, cfg, data.n_classes, amp_ctx, keep_first=True)
    summary = _summary(cfg, data, history, ev, best, core, info)
    if info.enabled:
        summary["ddp_rank_param_max_abs_diff"] = rank_divergence(core, info)
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if cfg.plots:
            _plots(run_dir, history, ev, data, core)
        from spiking.training.report import write_report

        write_report(run_dir, summary, history)
    return summary


def rank_divergence(model, info: D.DistInfo) -> float:
    """Largest |parameter difference| between any rank and rank 0 (0.0 when in sync)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    ref = flat.to(dev).clone()
    dist.broadcast(ref, src=0)
    diff = (flat.to(dev) - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def _epoch_line(rec: dict, epochs: int) -> str:
    s = (f"epoch {rec['epoch']}/{epochs}: train loss {rec['train_loss']:.4f} "
         f"acc {rec['train_accuracy']:.3f}")
    if "val_accuracy" in rec:
        s += f" | val loss {rec['val_loss']:.4f} acc {rec['val_accuracy']:.3f}"
    if "test_accuracy" in rec:
        s += f" | test loss {rec['test_loss']:.4f} acc {rec['test_accuracy']:.3f}"
    if rec.get("test_spikes_per_sample") is not None:
        s += f" | {rec['test_spikes_per_sample']:.0f} spikes/sample"
    return s + f" | {rec['samples_per_s']:.0f} samples/s, {rec['epoch_time_s']:.1f} s"


def _summary(cfg, data, history, ev, best, model, info) -> dict:
    last = history[-1] if history else {}
    val = [h for h in history if "val_accuracy" in h]
    # the epoch a user would pick without looking at the test split (first of ties)
    pick = max(val, key=lambda h: h["val_accuracy"]) if val else None
    return {
        "model": cfg.model, "dataset": cfg.dataset, "data": data.description,
        "epochs": cfg.epochs, "test_accuracy": ev["accuracy"], "test_loss": ev["loss"],
        "best_test_accuracy": best, "test_spikes_per_sample": ev["spikes_per_sample"],
        "train_accuracy": last.get("train_accuracy"), "train_time_s": last.get("train_time_s"),
        "val_accuracy": last.get("val_accuracy"),
        "best_val_epoch": pick["epoch"] if pick else None,
        "best_val_accuracy": pick["val_accuracy"] if pick else None,
        "test_accuracy_at_best_val": pick.get("test_accuracy") if pick else None,
        "n_train": len(data.train), "n_val": len(data.val) if data.val is not None else 0,
        "n_test": len(data.test),
        "parameters": sum(p.numel() for p in model.parameters()),
        "world_size": info.world_size, "device": str(info.device),
        "versions": ckpt.versions(), "config": cfg.to_dict(),
    }


def _plots(run_dir: Path, history, ev, data, model) -> None:
    from spiking.training import plots

    plots.learnt_delays(model, run_dir / "delays.png", dt=data.dt)
    plots.curves(history, run_dir / "curves.png")
    plots.confusion(ev["confusion"].numpy(), data.classes, run_dir / "confusion.png")
    first = ev.get("first")
    if first and first["activity"]:
        plots.raster(first["activity"], run_dir / "raster.png", dt=data.dt, sample=0,
                     label=first["label"], predicted=first["predicted"])
