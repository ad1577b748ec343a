"""The default dataset: real handwritten digits shipped with scikit-learn, recorded as N-MNIST.

scikit-learn bundles the UCI "Optical Recognition of Handwritten Digits" test set (1,797 8x8
images, 16 grey levels, classes 0-9; ``sklearn.datasets.load_digits``). :func:`ensure` upscales
them to 28x28 (bilinear) and records them with the emulated event camera of
:mod:`spiking.datasets.emulator` (three saccades, as N-MNIST was made), writing the official
N-MNIST layout ``<root>/NMNIST/{Train,Test}/<digit>/<nnnnn>.bin`` so that
:class:`spiking.datasets.NMNIST` reads it. It runs offline, in seconds, on any machine.

Split: images ``0..1499`` are the training set, the last 297 (``1500..1796``) the test set
(fixed, documented, no shuffling; roughly 150 / 30 per class). ``<nnnnn>`` is the 1-based image
index within the whole collection. These recordings are emulated, never "N-MNIST": accuracies
on them are not comparable to published N-MNIST results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from spiking.datasets.emulator import EmulatorConfig, emulate, resize_bilinear, write_nmnist


class UCIDigits:
    """Facts about the source images (sklearn's bundled copy of the UCI digits test set)."""

    name = "uci-digits"
    n_images = 1797
    image_shape = (8, 8)
    levels = 16                      # pixel values 0..16 (counts of on-bits in 4x4 blocks)
    n_test = 297                     # last 297 images form our test split
    citation = ("E. Alpaydin, C. Kaynak (1998). Optical Recognition of Handwritten Digits. "
                "UCI Machine Learning Repository. https://doi.org/10.24432/C50P49")
    licence = "CC BY 4.0 (UCI Machine Learning Repository)"
    loader = "sklearn.datasets.load_digits"


#: Folder name of the default dataset inside the user cache.
DEFAULT_NAME = "digits-emulated"
#: Bump when the files ensure() writes would change (emulator or layout changes).
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """The per-user cache (``$XDG_CACHE_HOME/spiking`` or ``~/.cache/spiking``)."""
    from spiking.datasets.locate import cache_dir

    return cache_dir()


def load_images():
    """(images ``[1797, 28, 28]`` in [0, 1], labels ``[1797]``) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the embedded digits need scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    imgs = resize_bilinear(d.images / UCIDigits.levels, EmulatorConfig().image_size)
    return np.clip(imgs, 0.0, 1.0), np.asarray(d.target, dtype=np.int64)


def _select(labels, split: str, per_class):
    first = UCIDigits.n_images - UCIDigits.n_test
    idx = np.arange(first) if split == "train" else np.arange(first, UCIDigits.n_images)
    if per_class is None:
        return idx
    return np.concatenate([idx[labels[idx] == c][:per_class] for c in range(10)])


def _params(n_train, n_test, seed, cfg):
    return {"format": FORMAT_VERSION, "n_train_per_class": n_train, "n_test_per_class": n_test,
            "seed": seed, "emulator": asdict(cfg), "source": UCIDigits.loader}


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def verify(root) -> tuple[bool, str]:
    """Whether ``root`` holds a complete, undamaged build; and why not."""
    root = Path(root)
    try:
        man = json.loads((root / MANIFEST).read_text())
        files = man["files"]
    except (OSError, ValueError, KeyError) as e:
        return False, f"no readable {MANIFEST} ({type(e).__name__})"
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file():
            return False, f"missing {rel}"
        if _digest(p) != digest:
            return False, f"checksum mismatch in {rel}"
    return True, "ok"


def build(root, n_train=None, n_test=None, seed: int = 0, cfg=None, progress=False) -> Path:
    """Write the dataset into ``root`` (overwriting it atomically); see :func:`ensure`."""
    cfg = cfg or EmulatorConfig()
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    imgs, labels = load_images()
    files = {}
    for split, per_class in (("train", n_train), ("test", n_test)):
        idx = _select(labels, split, per_class)
        folder = "Train" if split == "train" else "Test"
        for c in range(10):
            (tmp / "NMNIST" / folder / str(c)).mkdir(parents=True, exist_ok=True)
        recs = emulate(imgs[idx], cfg, seed=seed, indices=idx)
        it = zip(idx, recs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(idx), desc=f"writing {split}", unit="file")
        for i, rec in it:
            rel = f"NMNIST/{folder}/{labels[i]}/{i + 1:05d}.bin"
            write_nmnist(tmp / rel, rec)
            files[rel] = _digest(tmp / rel)
    man = {"params": _params(n_train, n_test, seed, cfg), "files": files,
           "citation": UCIDigits.citation, "licence": UCIDigits.licence,
           "note": "emulated event-camera recordings of the UCI digits; not N-MNIST"}
    (tmp / MANIFEST).write_text(json.dumps(man, indent=1))
    old = root.with_name(f".{root.name}.old{os.getpid()}")
    if root.exists():
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first: keep its build if it is whole
        if not verify(root)[0]:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return root


def ensure(root=None, n_train=None, n_test=None, seed: int = 0, cfg=None,
           progress=False) -> Path:
    """Return a folder that :class:`spiking.datasets.NMNIST` reads, building it if needed.

    ``root`` defaults to ``<user cache>/digits-emulated``. ``n_train`` / ``n_test`` cap the
    number of recordings per class (``None``: all 1,500 / 297 images). The folder is rebuilt
    (atomically: written beside it, then renamed) when it is missing, was made with other
    parameters, or any file is missing or fails its checksum.
    """
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (int(v) != v or v < 1):
            raise ValueError(f"{name} must be a positive number of recordings per class or "
                             f"None, got {v!r}")
    cfg = cfg or EmulatorConfig()
    root = Path(root) if root is not None else cache_root() / DEFAULT_NAME
    ok, _ = verify(root)
    if ok:
        man = json.loads((root / MANIFEST).read_text())
        want = json.loads(json.dumps(_params(n_train, n_test, seed, cfg)))
        if man.get("params") == want:
            return root
    return build(root, n_train, n_test, seed, cfg, progress)
