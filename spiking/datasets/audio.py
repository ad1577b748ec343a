"""Audio files -> SHD-format spike files (HDF5), and the FSDD -> SHD-format build.

The spikes come from :func:`spiking.datasets.audio_cochlea.cochlea` (the SHD conversion chain of
Cramer et al. 2020, re-implemented vectorised). Audio is resampled to 48 kHz first, SHD's audio
rate (``scipy.signal.resample_poly``; 8 kHz FSDD -> ``resample_poly(x, 6, 1)``, exactly as the
reference files in ``../shared/data/fsdd-shd-format`` were made, see their SOURCE.md).

Files written have the SHD layout read by :class:`spiking.datasets.SHD`::

    /spikes/times (N,) vlen float16 s   /spikes/units (N,) vlen uint16   /labels (N,) uint16
    /extra/speaker (N,) uint16   /extra/keys (K,) bytes   /extra/meta_info/gender (S,) bytes
    /extra/source_file (N,) bytes   attrs["description"]

Results on FSDD-derived spikes are "FSDD->SHD-format", never "SHD" accuracy.
"""

from __future__ import annotations

import os
import time
import wave
import zlib
from math import gcd
from pathlib import Path

import numpy as np

from spiking.datasets.audio_cochlea import cochlea

#: SHD audio rate (Cramer et al. 2020: 48 kHz recordings).
MODEL_RATE = 48000


class FSDD:
    """Facts about the Free Spoken Digit Dataset (``../shared/data/fsdd/SOURCE.md``)."""

    speakers = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    genders = ("male",) * 6
    keys = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    n_files = 3000
    sample_rate = 8000
    test_indices = range(5)          # official split: repetitions 0-4 are the test set
    citation = ("Z. Jackson et al., Free Spoken Digit Dataset, "
                "https://github.com/Jakobovski/free-spoken-digit-dataset, Zenodo 10.5281/zenodo.1342401")
    licence = "CC BY-SA 4.0 (derived spike files keep it)"


def read_audio(path):
    """``(samples float64 in [-1, 1], rate)`` of a mono audio file (PCM WAV natively; other
    formats through ``soundfile`` if installed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        with wave.open(str(path), "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
        if width == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
        elif width in (2, 4):
            x = np.frombuffer(raw, f"<i{width}").astype(np.float64) / 2 ** (8 * width - 1)
        else:
            raise wave.Error(f"{8 * width}-bit WAV")
    except (wave.Error, EOFError) as e:
        try:
            import soundfile
        except ImportError:
            raise ValueError(f"{path}: cannot read ({e}); install soundfile for non-PCM "
                             "formats") from e
        x, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
        ch, x = x.shape[1], x.reshape(-1)
    if ch != 1:
        x = x.reshape(-1, ch).mean(1)
    return x, int(rate)


def to_model_rate(x, rate: int, target: int = MODEL_RATE) -> np.ndarray:
    """Polyphase resampling to ``target`` Hz (``resample_poly(x, up, down)``, reduced ratio)."""
    if rate == target:
        return np.asarray(x, dtype=np.float64)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g)


def clip_seed(seed: int, name: str) -> int:
    """Per-clip seed from the run seed and the file name (independent of processing order)."""
    return (int(seed) << 32) ^ zlib.crc32(name.encode())


def file_to_spikes(path, n_channels: int = 700, seed: int = 0, **kw):
    """Spike ``(times s, units)`` of one audio file (resampled to 48 kHz first)."""
    x, rate = read_audio(path)
    return cochlea(to_model_rate(x, rate), MODEL_RATE, n_channels, clip_seed(seed, Path(path).name),
                   **kw)


def write_shd(path, spikes, labels, keys, speakers=None, genders=None, source_files=None,
              description="") -> Path:
    """Write samples ``spikes = [(times_s, units), ...]`` in the SHD layout (atomic)."""
    import h5py

    path = Path(path)
    n = len(spikes)
    if len(labels) != n:
        raise ValueError(f"{n} samples but {len(labels)} labels")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        t = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
        u = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i, (ti, ui) in enumerate(spikes):
            t[i] = np.asarray(ti, dtype=np.float16)
            u[i] = np.asarray(ui, dtype=np.uint16)
        f["labels"] = np.asarray(labels, dtype=np.uint16)
        f["extra/keys"] = np.array([k.encode() for k in keys])
        if speakers is not None:
            f["extra/speaker"] = np.asarray(speakers, dtype=np.uint16)
        if genders is not None:
            f["extra/meta_info/gender"] = np.array([g.encode() for g in genders])
        if source_files is not None:
            f["extra/source_file"] = np.array([s.encode() for s in source_files])
        f.attrs["description"] = description
    os.replace(tmp, path)
    return path


def fsdd_files(src):
    """FSDD recordings under ``src`` as ``(path, digit, speaker_id, index)``, sorted."""
    src = Path(src)
    rec = src / "recordings" if (src / "recordings").is_dir() else src
    out = []
    for p in sorted(rec.glob("*.wav")):
        parts = p.stem.split("_")
        if len(parts) == 3 and parts[1] in FSDD.speakers:
            out.append((p, int(parts[0]), FSDD.speakers.index(parts[1]), int(parts[2])))
    if not out:
        raise FileNotFoundError(f"no FSDD recordings '<digit>_<speaker>_<index>.wav' under {rec}")
    return out


def default_fsdd_src() -> Path:
    return Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[2].parent
                               / "shared" / "data")) / "fsdd"


def _ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, or raise a clear error."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(
            f"cannot write the converted FSDD->SHD-format files to {folder} ({e.strerror or e}); "
            f"pass a writable folder as --data-root (or out=), or leave it out to use the user "
            f"cache") from e


def build_fsdd_shd(src=None, out=None, seed: int = 0, limit=None, progress=True,
                   n_channels: int = 700) -> Path:
    """Convert FSDD to ``<out>/SHD/shd_{train,test}.h5`` (readable by :class:`SHD`).

    ``src``: FSDD folder (default ``$SPIKING_DATA/fsdd``); ``out``: default
    ``<user cache>/fsdd-shd``. Official split: repetitions 0-4 are test. ``limit`` caps the
    files per split (for quick checks). Returns ``out``.
    """
    from spiking.datasets.locate import cache_dir

    src = Path(src) if src is not None else default_fsdd_src()
    out = Path(out) if out is not None else cache_dir() / "fsdd-shd"
    _ensure_writable(out / "SHD")      # before minutes of conversion, not after
    files = fsdd_files(src)
    for split in ("train", "test"):
        sel = [f for f in files if (f[3] in FSDD.test_indices) == (split == "test")]
        sel = sel[:limit] if limit else sel
        it = sel
        if progress:
            from tqdm import tqdm

            it = tqdm(sel, desc=f"FSDD->SHD {split}", unit="clip")
        spikes = [file_to_spikes(p, n_channels, seed) for p, *_ in it]
        write_shd(out / "SHD" / f"shd_{split}.h5", spikes, [f[1] for f in sel], FSDD.keys,
                  speakers=[f[2] for f in sel], genders=FSDD.genders,
                  source_files=[f[0].name for f in sel],
                  description=f"SHD-format spikes computed from Free Spoken Digit Dataset audio "
                  f"({split} split: repetitions {'0-4' if split == 'test' else '5-49'}) with "
                  f"spiking.datasets.audio (cochlea chain of Cramer et al. 2020, seed {seed}) "
                  f"after resampling 8 kHz -> 48 kHz. NOT the SHD dataset. {FSDD.licence}.")
    return out


def closeness(ours, ref, n_channels: int = 700) -> dict:
    """Statistics comparing two lists of ``(times, units)`` samples (same clips, same order).

    ``count_ratio``: total spikes ours / ref; ``channel_corr``: Pearson correlation of the
    per-channel spike counts summed over all clips; ``band_corr``: the same over 35 bands of 20
    channels; ``mean_time_diff_s``: mean over clips of |mean spike time ours - ref|.
    """
    def counts(s):
        return sum(np.bincount(np.asarray(u, np.int64), minlength=n_channels) for _, u in s)

    a, b = counts(ours), counts(ref)
    band = n_channels // 35
    return {
        "count_ratio": float(a.sum() / b.sum()),
        "channel_corr": float(np.corrcoef(a, b)[0, 1]),
        "band_corr": float(np.corrcoef(a[:35 * band].reshape(35, -1).sum(1),
                                       b[:35 * band].reshape(35, -1).sum(1))[0, 1]),
        "mean_time_diff_s": float(np.mean([abs(np.mean(np.asarray(t, np.float64))
                                               - np.mean(np.asarray(r, np.float64)))
                                           for (t, _), (r, _) in zip(ours, ref)])),
    }


def bench_details(args=None) -> dict:
    """Time the converter on FSDD clips; with ``lauscher=True`` also lauscher on the first one.

    ``args``: dict or namespace with ``clips`` (default 3), ``lauscher`` (default False: one
    lauscher clip takes ~50-150 s on 2 cores), ``src`` (FSDD folder) or ``data`` (the shared
    data folder). Returns a dict of the figures.
    """
    def get(k, d=None):
        return args.get(k, d) if isinstance(args, dict) else getattr(args, k, d)

    n_clips = int(get("clips", 3) or 3)
    src = get("src") or (Path(get("data")) / "fsdd" if get("data") else default_fsdd_src())
    files = [f[0] for f in fsdd_files(src)][:n_clips]
    file_to_spikes(files[0])  # compile the kernels, build or load the filter table
    res = {"clips": [f.name for f in files], "ours_s": [], "audio_s": []}
    for f in files:
        x, rate = read_audio(f)
        t0 = time.perf_counter()
        file_to_spikes(f)
        res["ours_s"].append(time.perf_counter() - t0)
        res["audio_s"].append(len(x) / rate)
    if get("lauscher", False):
        from lauscher.audiowaves import MonoAudioWave
        from lauscher.transformations.wave2spike import Wave2Spike

        x, rate = read_audio(files[0])
        t0 = time.perf_counter()
        Wave2Spike(num_channels=700)(MonoAudioWave(to_model_rate(x, rate), MODEL_RATE))
        res["lauscher_s"] = time.perf_counter() - t0
        res["speedup"] = res["lauscher_s"] / res["ours_s"][0]
    return res


def bench(args=None) -> list:
    """Rows ``(what, unit, ours, lauscher, speed-up)`` for ``benchmarks/datasets.py``."""
    r = bench_details(args)
    rows = []
    for i, (name, s, dur) in enumerate(zip(r["clips"], r["ours_s"], r["audio_s"])):
        theirs = r.get("lauscher_s") if i == 0 else None
        rows.append((f"audio->700ch spikes, {name} ({dur:.2f} s audio)", "s/clip", f"{s:.2f}",
                     f"{theirs:.1f}" if theirs else "-",
                     f"{theirs / s:.0f}x" if theirs else "-"))
    return rows
