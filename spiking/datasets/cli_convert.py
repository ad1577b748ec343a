"""``spiking data emulate`` and ``spiking data audio2spikes``: the converters on the command line.

:func:`add_parsers` adds both subcommands to the ``spiking data`` subparsers; each sets
``func`` to its handler, which returns an exit status.
"""

from __future__ import annotations

from pathlib import Path


def add_parsers(data_subparsers) -> None:
    p = data_subparsers.add_parser(
        "emulate", help="record images with an emulated event camera (N-MNIST .bin layout)",
        description="Images (a folder <label>/<image>, or the bundled UCI digits by default) are "
        "recorded by an emulated event camera making three saccades, as N-MNIST was made, and "
        "written as <out>/NMNIST/<Train|Test>/<label>/<n>.bin.")
    p.add_argument("images", nargs="?", default=None,
                   help="folder of <label>/<image files>; omitted: the bundled digits")
    p.add_argument("--out", default=None, help="output root (default: the user cache)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="split folder for an image folder (default train)")
    p.add_argument("--per-class", type=int, default=None,
                   help="bundled digits: recordings per class and split (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None, help="log-intensity threshold")
    p.add_argument("--noise-hz", type=float, default=None, help="background events per pixel/s")
    p.set_defaults(func=run_emulate)

    a = data_subparsers.add_parser(
        "audio2spikes", help="audio -> SHD-format spikes (HDF5) with the SHD cochlea model",
        description="Converts WAV files (or a folder of them) with the cochlea chain used to "
        "build SHD (Cramer et al. 2020), or the whole FSDD with --fsdd.")
    a.add_argument("inputs", nargs="*", help="audio files or folders")
    a.add_argument("--fsdd", nargs="?", const="", default=None, metavar="SRC",
                   help="convert the Free Spoken Digit Dataset (default $SPIKING_DATA/fsdd) "
                   "into <out>/SHD/shd_{train,test}.h5")
    a.add_argument("--out", default=None,
                   help="output .h5 file (inputs) or root folder (--fsdd; default user cache)")
    a.add_argument("--label", type=int, default=0, help="label stored for plain inputs")
    a.add_argument("--channels", type=int, default=700)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, default=None, help="--fsdd: files per split")
    a.set_defaults(func=run_audio2spikes)


def run_emulate(args) -> int:
    from spiking.datasets import embedded
    from spiking.datasets.emulator import EmulatorConfig, emulate, load_image_folder, write_nmnist

    kw = {k: v for k, v in (("threshold", args.threshold), ("noise_hz", args.noise_hz))
          if v is not None}
    cfg = EmulatorConfig(**kw)
    if args.images is None:
        root = embedded.ensure(args.out, args.per_class, args.per_class, args.seed, cfg,
                               progress=True)
        print(f"bundled digits recorded under {root} (read with spiking.datasets.NMNIST)")
        return 0
    imgs, labels, names = load_image_folder(args.images, cfg)
    out = Path(args.out) if args.out else embedded.cache_root() / "emulated"
    folder = out / "NMNIST" / ("Train" if args.split == "train" else "Test")
    recs = emulate(imgs, cfg, seed=args.seed)
    for rec, lab, name in zip(recs, labels, names):
        (folder / lab).mkdir(parents=True, exist_ok=True)
        write_nmnist(folder / lab / f"{name}.bin", rec)
    print(f"{len(recs)} recordings written under {folder}")
    return 0


def run_audio2spikes(args) -> int:
    from spiking.datasets import audio

    if args.fsdd is not None:
        out = audio.build_fsdd_shd(src=args.fsdd or None, out=args.out, seed=args.seed,
                                   limit=args.limit, n_channels=args.channels)
        print(f"FSDD->SHD-format files under {out / 'SHD'} (read with spiking.datasets.SHD)")
        return 0
    files = []
    for item in args.inputs:
        p = Path(item)
        files += sorted(p.rglob("*.wav")) if p.is_dir() else [p]
    if not files:
        raise ValueError("no audio inputs: give WAV files or folders, or --fsdd")
    if not args.out:
        raise ValueError("--out FILE.h5 is required for plain inputs")
    from tqdm import tqdm

    spikes = [audio.file_to_spikes(f, args.channels, args.seed)
              for f in tqdm(files, desc="audio2spikes", unit="file")]
    audio.write_shd(args.out, spikes, [args.label] * len(files), [str(i) for i in range(args.label + 1)],
                    source_files=[f.name for f in files],
                    description="SHD-format spikes from spiking.datasets.audio")
    print(f"{len(files)} samples written to {args.out}")
    return 0
