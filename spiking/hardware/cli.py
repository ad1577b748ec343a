"""`spiking profile` and `spiking export` subcommands."""

from __future__ import annotations

import sys
from pathlib import Path


def load_model(path):
    """A model from a training checkpoint (``spiking.training.checkpoint``) or a module saved
    whole with ``torch.save(model, path)`` (read with ``weights_only=False``: only load files
    you trust)."""
    import torch

    p = Path(path)
    if p.is_dir() or p.suffix == ".pt" and p.is_file():
        try:
            from spiking.training import checkpoint

            state = checkpoint.load(p)
        except (ImportError, ValueError, FileNotFoundError):
            state = None
        if state is not None:
            return _model_from_checkpoint(p, state)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found")
    obj = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"{p}: neither a training checkpoint nor a saved nn.Module "
                         f"(got {type(obj).__name__})")
    return obj


def _model_from_checkpoint(p: Path, state: dict):
    """Rebuild a training checkpoint's model: from the dataset description the checkpoint
    carries, or (older checkpoints) by opening the dataset it was trained on."""
    from types import SimpleNamespace

    from spiking.training.config import Config
    from spiking.training.loop import build_model

    cfg = Config.from_dict(state["config"])
    info = state.get("data") or {}
    if "input_shape" in info and "n_classes" in info:
        data = SimpleNamespace(input_shape=tuple(info["input_shape"]),
                               n_classes=int(info["n_classes"]), dt=float(info.get("dt", 1e-3)))
        model = build_model(cfg, data)
        model.load_state_dict(state["model"])
        return model.eval()
    from spiking.training.cli import load_checkpoint_model

    try:
        return load_checkpoint_model(p, device="cpu")[0]
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"checkpoint {p} does not record its input shape and its dataset "
                         f"{cfg.dataset!r} could not be opened to find it: {e}") from e


def _input(model, args):
    import torch

    from spiking.hardware.report import example_input

    if args.input:
        x = torch.load(args.input, map_location="cpu", weights_only=True)
        return x[0] if isinstance(x, (tuple, list)) else x
    shape = tuple(int(s) for s in args.input_shape.split(",")) if args.input_shape else None
    return example_input(model, steps=args.steps, batch=args.batch, rate=args.rate,
                         input_shape=shape, seed=args.seed)


def cmd_profile(args) -> int:
    from spiking.hardware.report import profile_report

    model = load_model(args.checkpoint)
    path = profile_report(model, _input(model, args), args.out, hardware=args.hardware)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


def cmd_export(args) -> int:
    out = Path(args.out)
    model = load_model(args.checkpoint)
    x = _input(model, args)
    if args.format == "nir":
        from spiking.hardware.export import write_nir

        p = write_nir(model, x, out if out.suffix == ".nir" else out / "model.nir")
    elif args.format in ("weightmap", "pynn"):
        from spiking.hardware import spinnaker, weightmap

        pops, projs, _ = spinnaker.network_from_model(model, x)
        m = spinnaker.map_network(pops, projs)
        if args.format == "weightmap":
            p = weightmap.write_weightmap(out, m, pynn=weightmap.pynn_from_model(model, m),
                                          overwrite=args.overwrite)
        else:
            import json

            out.mkdir(parents=True, exist_ok=True)
            p = out / "pynn.json"
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(json.dumps(weightmap.pynn_from_model(model, m)))
            tmp.replace(p)
    else:
        p = _export_crossbar(model, x, out, args)
    print(f"wrote {p}")
    return 0


def _export_crossbar(model, x, out, args):
    """Program every Linear onto crossbars of ``--device`` and write the per-tile conductance
    maps (plus, where the model maps SpiNNaker-like, its projections and routes)."""
    import dataclasses

    from spiking.hardware import crossbar, spinnaker, weightmap

    dev, geo = crossbar.load_device(args.device)
    wrapped = crossbar.wrap(model, dev, geo, seed=args.seed)
    tiles, meta = crossbar.export_tiles(wrapped)
    if not tiles:
        raise ValueError("the model has no Linear layers to place on crossbars")
    try:
        pops, projs, _ = spinnaker.network_from_model(model, x)
        mapping = spinnaker.map_network(pops, projs)
    except (TypeError, ValueError) as e:
        print(f"note: no SpiNNaker-like mapping in the map ({e}); crossbar tiles only",
              file=sys.stderr)
        mapping = None
    device = {**dataclasses.asdict(dev), **dataclasses.asdict(geo), "seed": args.seed,
              "profile": str(args.device)}
    return weightmap.write_weightmap(out, mapping, crossbar_tiles=tiles, crossbar_meta=meta,
                                     crossbar_device=device, overwrite=args.overwrite)


def _common(sp):
    sp.add_argument("checkpoint", help="training checkpoint (file or run folder) or a "
                                       "torch.save'd spiking model")
    sp.add_argument("--input", help="a torch.save'd input tensor [T, B, ...] (default: "
                                    "Bernoulli spikes)")
    sp.add_argument("--input-shape", help="per-step input shape, e.g. 2,34,34")
    sp.add_argument("--steps", type=int, default=50)
    sp.add_argument("--batch", type=int, default=1)
    sp.add_argument("--rate", type=float, default=0.1, help="input spike probability")
    sp.add_argument("--seed", type=int, default=0)


def add_parsers(sub) -> None:
    from spiking.hardware.report import HARDWARE

    sp = sub.add_parser("profile", help="operation counts, energy estimates and a SpiNNaker-"
                                        "like execution profile of a trained model")
    _common(sp)
    sp.add_argument("--hardware", default="spinnaker2",
                    help=f"device profile ({', '.join(sorted(HARDWARE))}) or a .toml path")
    sp.add_argument("--out", default="hardware-report", help="report folder")
    sp.set_defaults(func=cmd_profile)
    sp = sub.add_parser("export", help="export a trained model: NIR, weight map, PyNN lists, "
                                       "crossbar conductance maps")
    _common(sp)
    sp.add_argument("--format", choices=["nir", "weightmap", "pynn", "crossbar"],
                    default="nir")
    sp.add_argument("--out", default="export", help="output file or folder")
    sp.add_argument("--device", default="rram",
                    help="crossbar device profile with a [crossbar] table (name or .toml)")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(func=cmd_export)
