"""``spiking data``: list, info, verify, download, show (and emulate / audio2spikes when present).

``add_parser(subparsers)`` registers the ``data`` command on the top-level parser; every
subcommand sets ``func`` and returns an exit status (0 ok, 1 a check failed, 2 usage/missing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
from pathlib import Path


def _datasets():
    from spiking.datasets import DATASETS

    return DATASETS


def _splits(split: str):
    return ("train", "test") if split == "all" else (split,)


def _open(cls, root, split, file=None, **kw):
    import warnings

    kw = dict(kw)
    if file is not None:
        kw["file"] = file
    with warnings.catch_warnings():  # what was skipped is printed by the caller
        warnings.simplefilter("ignore", UserWarning)
        return cls(root=root, train=split == "train", **kw)


def cmd_list(args) -> int:
    from spiking.datasets.locate import resolve_root

    for key, cls in _datasets().items():
        root, origin = resolve_root(args.root, cls.env_var)
        found = [s for s in ("train", "test") if _present(cls, root, s)]
        sizes = ", ".join(f"{k} {v:,}" for k, v in cls.split_sizes.items())
        print(f"{key:<8} {cls.__name__}: sensor {cls.sensor_size}, {len(cls.classes)} classes, "
              f"{sizes}; found here: {', '.join(found) or 'none'} (root {root}, from {origin})")
    # the two datasets this package builds itself (training's --dataset digits / fsdd-shd)
    from spiking.datasets.locate import cache_dir

    digits = cache_dir() / "digits-emulated"
    built = (digits / "NMNIST").is_dir()
    print(f"{'digits':<8} UCI digits recorded by the emulated event camera (not N-MNIST): sensor "
          f"(34, 34, 2), 10 classes, train 1,500, test 297; "
          f"{'built at ' + str(digits) if built else 'built on first use (~40 s)'}")
    fsdd = cache_dir() / "fsdd-shd" / "SHD"
    have = [s for s in ("train", "test") if (fsdd / f"shd_{s}.h5").is_file()]
    state = (f"built: {', '.join(have)} at {fsdd}" if have else
             "built on first use (about 1 h on 2 cores) from $SPIKING_DATA/fsdd")
    print(f"{'fsdd-shd':<8} FSDD speech converted to SHD-format spikes (not SHD): 700 channels, "
          f"10 classes, train 2,700, test 300; {state}")
    return 0


def _present(cls, root, split) -> bool:
    if cls.__name__ == "NMNIST":
        return cls.split_folder(root, split) is not None
    return cls.data_file(root, split) is not None


def cmd_info(args) -> int:
    from spiking.datasets.locate import resolve_root, search_paths

    cls = _datasets()[args.name]
    root, origin = resolve_root(args.root, cls.env_var)
    print(f"{cls.__name__}  sensor_size (W, H, P) = {cls.sensor_size}")
    print(f"classes ({len(cls.classes)}): {', '.join(cls.classes)}")
    print(f"citation: {cls.citation}")
    print(f"licence:  {cls.licence}")
    print(f"root:     {root} (from {origin}); search order: {'; '.join(search_paths(cls.env_var))}")
    for split in ("train", "test"):
        a = cls.archives[split]
        size = f"{a['size_bytes']:,} bytes" if a.get("size_bytes") else "size not recorded"
        print(f"[{split}] {cls.split_sizes[split]:,} samples; archive {a['filename']} "
              f"(md5 {a['md5']}, {size})\n    url {a['url']}")
        if cls.__name__ == "NMNIST":
            folder = cls.split_folder(root, split)
            want = root / "NMNIST" / a["folder"]
            if folder is None:
                print(f"    expected {want}/<digit>/<nnnnn>.bin: MISSING")
            else:
                files = list(folder.glob("*/*.bin"))
                nbytes = sum(f.stat().st_size for f in files)
                print(f"    {folder}: {len(files):,} .bin files, {nbytes:,} bytes")
        else:
            f = cls.data_file(root, split)
            want = root / "SHD" / a["data_file"]
            print(f"    {f}: {f.stat().st_size:,} bytes" if f else f"    expected {want}: MISSING")
    return 0


def _md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_manifest(root: Path) -> tuple[int, list[str]]:
    """Check a ``SHA256SUMS`` file in ``root`` if there is one: (files checked, problems)."""
    manifest = root / "SHA256SUMS"
    if not manifest.is_file():
        return 0, []
    problems, n = [], 0
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = root / name.lstrip("*")
        n += 1
        if not path.is_file():
            problems.append(f"{path}: listed in {manifest} but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: SHA-256 differs from {manifest}")
    return n, problems


def cmd_verify(args) -> int:
    from spiking.datasets.locate import DatasetNotFoundError, resolve_root

    status = 0
    names = [args.name] if args.name else list(_datasets())
    for key in names:
        cls = _datasets()[key]
        root, _ = resolve_root(args.root, cls.env_var)
        for split in _splits(args.split):
            a = cls.archives[split]
            arch = root / cls.__name__ / a["filename"]
            if arch.is_file():
                ok = _md5(arch) == a["md5"]
                status |= not ok
                print(f"{key} {split}: archive {arch} md5 {'OK' if ok else 'MISMATCH'}")
            try:
                kw = {"verify": "full"} if key == "nmnist" else {}
                ds = _open(cls, root, split, on_error="skip", **kw)
            except DatasetNotFoundError:
                print(f"{key} {split}: not found under {root}")
                status |= args.name is not None and args.split != "all"
                continue
            except ValueError as e:
                print(f"{key} {split}: CORRUPT {e}")
                status = 1
                continue
            if key == "shd":  # read every sample once: truncation shows up here
                for i in range(len(ds)):
                    try:
                        ds.read_raw(i)
                    except ValueError as e:
                        ds.skipped.append(e)
            expect = cls.split_sizes[split]
            note = "" if len(ds) == expect else f" (partial: official split has {expect:,})"
            print(f"{key} {split}: {len(ds):,} readable samples{note}, {len(ds.skipped)} corrupt")
            for s in ds.skipped[:20]:
                print(f"    corrupt: {s}")
            status |= bool(ds.skipped)
        if key == "nmnist":
            n, problems = _check_manifest(root)
            if n:
                print(f"{key}: {n} files checked against {root / 'SHA256SUMS'}, "
                      f"{len(problems)} problem(s)")
                for p in problems[:20]:
                    print(f"    {p}")
                status |= bool(problems)
    return int(status)


def cmd_download(args) -> int:
    from spiking.datasets.locate import resolve_root

    cls = _datasets()[args.name]
    root, _ = resolve_root(args.root, cls.env_var)
    for split in _splits(args.split):
        if _present(cls, root, split) and not args.force:
            print(f"{args.name} {split}: already present under {root}")
            continue
        print(f"{args.name} {split}: downloading {cls.archives[split]['url']} into {root} ...")
        cls.download(root, split)
    return 0


def cmd_show(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spiking.datasets.binning import bin_events

    cls = _datasets()[args.name]
    ds = _open(cls, args.root, args.split, file=getattr(args, "file", None))
    events, label = ds[args.index]
    title = f"{cls.__name__} {args.split}[{args.index}] label {label} ({ds.classes[label]})"
    out = Path(args.out)
    if "y" not in events.dtype.names:  # audio: raster of channel against time
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.scatter(events["t"] / 1e3, events["x"], s=1, c="k")
        ax.set(xlabel="time (ms)", ylabel="channel", title=title)
        fig.savefig(out, dpi=120, bbox_inches="tight")
        print(f"wrote {out} ({len(events)} spikes)")
        return 0
    frames = bin_events(events, cls.sensor_size, n_time_bins=args.bins).numpy()
    signed = frames[:, 1] - frames[:, 0] if frames.shape[1] == 2 else frames[:, 0]
    lim = max(float(abs(signed).max()), 1.0)
    if out.suffix.lower() == ".gif":
        from matplotlib.animation import FuncAnimation, PillowWriter

        fig, ax = plt.subplots(figsize=(3, 3))
        im = ax.imshow(signed[0], cmap="bwr", vmin=-lim, vmax=lim)
        ax.set_axis_off()
        FuncAnimation(fig, lambda i: (im.set_data(signed[i]), ax.set_title(f"bin {i}"))[:1],
                      frames=len(signed)).save(out, writer=PillowWriter(fps=args.fps))
    else:
        cols = min(len(signed), 10)
        rows = -(-len(signed) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows + 0.4), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i < len(signed):
                ax.imshow(signed[i], cmap="bwr", vmin=-lim, vmax=lim)
                ax.set_title(f"bin {i}", fontsize=7)
        fig.suptitle(title + " (red ON, blue OFF)", fontsize=8)
        fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"wrote {out} ({len(events)} events in {len(signed)} bins)")
    return 0


def _help(parser):
    def handler(args) -> int:
        parser.print_help()
        return 0
    return handler


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spiking data ...`` on the top-level ``subparsers``."""
    p = subparsers.add_parser("data", help="datasets: list, info, verify, download, emulate, "
                              "audio2spikes, show")
    p.set_defaults(func=_help(p))
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    names = sorted(_datasets())

    def common(sp, name=True, name_optional=False):
        if name:
            sp.add_argument("name", choices=names, nargs="?" if name_optional else None)
        sp.add_argument("--root", help="dataset root (default: $SPIKING_<NAME>_ROOT, "
                        "$SPIKING_DATA_ROOT, then the user cache)")
        return sp

    common(sub.add_parser("list", help="known datasets and whether they are found"),
           name=False).set_defaults(func=cmd_list)
    common(sub.add_parser("info", help="files, sizes, checksums and where it looks")
           ).set_defaults(func=cmd_info)
    sp = common(sub.add_parser("verify", help="check archives (MD5), manifests (SHA-256) and "
                               "every file"), name_optional=True)
    sp.add_argument("--split", choices=["train", "test", "all"], default="all")
    sp.set_defaults(func=cmd_verify)
    sp = common(sub.add_parser("download", help="fetch with tonic's downloaders"))
    sp.add_argument("--split", choices=["train", "test", "all"], default="all")
    sp.add_argument("--force", action="store_true", help="download even if present")
    sp.set_defaults(func=cmd_download)
    sp = common(sub.add_parser("show", help="plot one sample: frames (.png grid / .gif "
                               "animation) or a spike raster"))
    sp.add_argument("--split", choices=["train", "test"], default="train")
    sp.add_argument("--index", type=int, default=0)
    sp.add_argument("--file", help="SHD-layout .h5 file to read instead of the root")
    sp.add_argument("--bins", type=int, default=10, help="time bins for camera data")
    sp.add_argument("--fps", type=int, default=5, help="frames per second of a .gif")
    sp.add_argument("--out", required=True, help="output image (.png) or animation (.gif)")
    sp.set_defaults(func=cmd_show)
    try:  # emulate / audio2spikes live with the converters
        convert = importlib.import_module("spiking.datasets.cli_convert")
    except ModuleNotFoundError as e:
        if e.name != "spiking.datasets.cli_convert":
            raise
        for name in ("emulate", "audio2spikes"):
            sp = sub.add_parser(name, help="(not in this build)")
            sp.set_defaults(func=_missing_convert(name))
    else:
        convert.add_parsers(sub)
    return p


def _missing_convert(name):
    def handler(args) -> int:
        print(f"error: `spiking data {name}` needs spiking.datasets.cli_convert, which is not "
              "part of this build", file=sys.stderr)
        return 2
    return handler


def main(argv=None) -> int:
    """Run ``spiking data`` on its own (``python -m spiking.datasets.cli ...``)."""
    parser = argparse.ArgumentParser(prog="spiking")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
