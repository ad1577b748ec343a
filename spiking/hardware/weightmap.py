"""Event-driven weight maps: a documented, versioned directory format, its writer and reader.

Layout (schema version 1)::

    <dir>/manifest.json             format, schema_version, producer, machine, populations,
                                    projections (name, pre, post, sizes, frac_bits, bits,
                                    zeroed, saturated, file), cores, delay_extension_cores
                                    (source core, chip, core, stages, neurons needing each
                                    stage; for delays over max_delay_steps), routing, crossbar and
                                    "files": {relative path: sha256 hex} of every array file
    <dir>/projections/<i>.npz       pre (int64), post (int64), weight (float64),
                                    weight_fixed (int32), delay (int16, time steps)
    <dir>/cores.npz                 population index, start, stop, chip, core, key, mask
    <dir>/routing.npz               chip, key, mask, target-core offsets/flat list (CSR);
                                    target n < len(cores) is a neuron core, a larger one the
                                    delay-extension core with that "index" (key index << shift)
    <dir>/crossbar/<tile>.npy       optional: conductance maps [2, rows, cols] (G+, G-) in S;
                                    the manifest's "crossbar" entries give each tile's layer,
                                    row/column ranges and scale (W = (G+ - G-) / scale), and
                                    "crossbar_device" the device and array parameters
    <dir>/pynn.json                 optional: PyNN FromListConnector lists + cell parameters

Writes are atomic: everything goes to a temporary directory beside the target, which is
renamed into place only when complete. :func:`read_weightmap` checks the schema version, that
every listed file exists and matches its checksum, and the arrays' keys, lengths and index
ranges; any failure is a ValueError (FileNotFoundError for a missing map) naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "spiking-weightmap"
SCHEMA_VERSION = 1
_PROJ_KEYS = ("pre", "post", "weight", "weight_fixed", "delay")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_weightmap(path, mapping, *, crossbar_tiles: dict | None = None,
                    crossbar_meta: dict | None = None, crossbar_device: dict | None = None,
                    pynn: dict | None = None, overwrite: bool = False) -> Path:
    """Write a :class:`~spiking.hardware.spinnaker.Mapping` (and optional crossbar conductance
    tiles ``{name: array [2, rows, cols]}`` with per-tile metadata ``{name: dict}`` and the
    device/array parameters, and PyNN lists) as a weight map directory. ``mapping=None``
    writes a map with crossbar tiles only (no populations, cores or routes)."""
    if mapping is None:
        from spiking.hardware.spinnaker import SPINNAKER2, Mapping

        mapping = Mapping(SPINNAKER2, {}, [], [], {})
    from spiking import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"weight map {path} already exists (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        files = {}

        def save(rel, **arrays):
            f = tmp / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            np.savez(f, **arrays)
            files[rel] = _sha256(f)

        pops = list(mapping.populations)
        projs = []
        for i, pr in enumerate(mapping.projections):
            q = mapping.quantised[pr.name]
            rel = f"projections/{i}.npz"
            save(rel, pre=pr.pre_idx.astype(np.int64), post=pr.post_idx.astype(np.int64),
                 weight=pr.weight.astype(np.float64), weight_fixed=q.weight_fixed,
                 delay=pr.delay.astype(np.int16))
            projs.append({"name": pr.name, "pre": pr.pre, "post": pr.post, "n_pre": pr.n_pre,
                          "n_post": pr.n_post, "synapses": int(pr.pre_idx.size),
                          "frac_bits": q.frac_bits, "bits": q.bits, "zeroed": q.zeroed,
                          "saturated": q.saturated, "file": rel})
        sl = mapping.slices
        save("cores.npz", population=np.array([pops.index(s.population) for s in sl]),
             start=np.array([s.start for s in sl]), stop=np.array([s.stop for s in sl]),
             chip=np.array([s.chip for s in sl]), core=np.array([s.core for s in sl]),
             key=np.array([s.key for s in sl], dtype=np.uint32),
             mask=np.array([s.mask for s in sl], dtype=np.uint32))
        chips, keys, masks, offs, flat = [], [], [], [0], []
        for chip, entries in sorted(mapping.tables.items()):
            for k, msk, cores in entries:
                chips.append(chip)
                keys.append(k)
                masks.append(msk)
                flat.extend(cores)
                offs.append(len(flat))
        save("routing.npz", chip=np.array(chips, dtype=np.int64),
             key=np.array(keys, dtype=np.uint32), mask=np.array(masks, dtype=np.uint32),
             offsets=np.array(offs, dtype=np.int64), targets=np.array(flat, dtype=np.int64))
        tiles = []
        for name, g in (crossbar_tiles or {}).items():
            rel = f"crossbar/{name}.npy"
            (tmp / "crossbar").mkdir(exist_ok=True)
            np.save(tmp / rel, np.asarray(g, dtype=np.float64))
            files[rel] = _sha256(tmp / rel)
            tiles.append({"name": name, "file": rel, "shape": list(np.shape(g)),
                          "unit": "siemens", "layout": "[G+, G-] x rows x cols",
                          **(crossbar_meta or {}).get(name, {})})
        if pynn is not None:
            (tmp / "pynn.json").write_text(json.dumps(pynn, indent=1))
            files["pynn.json"] = _sha256(tmp / "pynn.json")
        m = mapping.machine
        manifest = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "producer": f"spiking {__version__}",
            "machine": {k: getattr(m, k) for k in m.__dataclass_fields__},
            "populations": mapping.populations, "projections": projs,
            "cores": {"file": "cores.npz", "count": len(sl)},
            "delay_extension_cores": [
                {"index": mapping.n_cores + j, "source_core": d.source, "chip": d.chip,
                 "core": d.core, "stages": int(d.stages.shape[1]),
                 "neurons_per_stage": d.stages.sum(0).tolist()}
                for j, d in enumerate(mapping.delay_extensions)],
            "routing": {"file": "routing.npz", "entries": len(keys)},
            "crossbar": tiles, "crossbar_device": crossbar_device or {}, "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_weightmap(path) -> dict:
    """Validate and load a weight map: ``{"manifest", "projections": [dict of arrays + meta],
    "cores", "routing", "crossbar": {name: array}, "pynn"}``."""
    path = Path(path)
    man_f = path / "manifest.json"
    if not man_f.is_file():
        raise FileNotFoundError(f"weight map {path}: no manifest.json")
    try:
        man = json.loads(man_f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{man_f}: not valid JSON ({e})") from e
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise ValueError(f"{man_f}: format is {man.get('format') if isinstance(man, dict) else man!r}"
                         f", expected {FORMAT!r}")
    if man.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{man_f}: schema_version {man.get('schema_version')!r} is not "
                         f"supported (this reader reads {SCHEMA_VERSION})")
    files = man.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{man_f}: no 'files' checksum table")  # noqa: TRY004
    for rel, digest in files.items():
        f = path / rel
        if not f.is_file():
            raise ValueError(f"weight map {path}: file {rel} listed in the manifest is missing")
        if _sha256(f) != digest:
            raise ValueError(f"weight map {path}: checksum mismatch for {rel} (file corrupted "
                             f"or modified after writing)")

    def load(rel, keys):
        if rel not in files:
            raise ValueError(f"{man_f}: {rel} has no checksum entry")
        try:
            with np.load(path / rel, allow_pickle=False) as z:
                missing = [k for k in keys if k not in z.files]
                if missing:
                    raise ValueError(f"weight map {path}: {rel} lacks arrays {missing}")
                return {k: z[k] for k in z.files}
        except (OSError, EOFError) as e:
            raise ValueError(f"weight map {path}: {rel} is not a readable .npz ({e})") from e

    projs = []
    for p in man.get("projections", []):
        arr = load(p["file"], _PROJ_KEYS)
        n = arr["pre"].size
        if any(arr[k].size != n for k in _PROJ_KEYS):
            raise ValueError(f"weight map {path}: {p['file']} arrays differ in length")
        if n and (arr["pre"].min() < 0 or arr["pre"].max() >= p["n_pre"]
                  or arr["post"].min() < 0 or arr["post"].max() >= p["n_post"]):
            raise ValueError(f"weight map {path}: {p['file']} has indices outside "
                             f"[0, {p['n_pre']}) x [0, {p['n_post']})")
        projs.append({**p, **arr})
    cores = load(man["cores"]["file"], ("population", "start", "stop", "chip", "core", "key",
                                        "mask"))
    routing = load(man["routing"]["file"], ("chip", "key", "mask", "offsets", "targets"))
    crossbar = {}
    for t in man.get("crossbar", []):
        g = np.load(path / t["file"], allow_pickle=False)
        if list(g.shape) != list(t["shape"]) or g.ndim != 3 or g.shape[0] != 2:
            raise ValueError(f"weight map {path}: {t['file']} has shape {list(g.shape)}, "
                             f"expected {t['shape']} = [2, rows, cols]")
        crossbar[t["name"]] = g
    pynn = json.loads((path / "pynn.json").read_text()) if "pynn.json" in files else None
    return {"manifest": man, "projections": projs, "cores": cores, "routing": routing,
            "crossbar": crossbar, "pynn": pynn}


def pynn_lists(mapping, cells: dict | None = None, dt_ms: float = 1.0) -> dict:
    """PyNN ``FromListConnector`` lists ``[(pre, post, weight, delay_ms), ...]`` per projection,
    the simulation time step to run them at (``timestep_ms``, one step of the mapping) and cell
    parameters (``IF_curr_exp`` names: tau_m, v_thresh, v_reset, v_rest in mV/ms)
    for sPyNNaker users. Weights are our dimensionless units: scale them to nA for your cell's
    ``cm`` (PyNN's current-based synapse adds ``w`` to the synaptic current)."""
    out = {"connectors": {}, "cells": cells or {}, "timestep_ms": float(dt_ms),
           "note": pynn_lists.__doc__.split("\n")[-2]}
    for pr in mapping.projections:
        out["connectors"][pr.name] = {
            "pre": pr.pre, "post": pr.post,
            "list": [[int(a), int(b), float(w), float(d) * dt_ms]
                     for a, b, w, d in zip(pr.pre_idx, pr.post_idx, pr.weight, pr.delay)]}
    return out


def pynn_from_model(model, mapping) -> dict:
    """:func:`pynn_lists` for the mapping of ``model`` (as
    :func:`spiking.hardware.spinnaker.network_from_model` names its populations, ``pop<i>`` for
    layer ``i`` of the stack): delays in ms from the neurons' ``dt`` (the mapping counts them in
    steps) and ``IF_curr_exp`` parameters of each LIF / CubaLIF population; other neuron kinds
    (ALIF's adaptive threshold, LI readouts) are named as having no ``IF_curr_exp`` form. A
    ValueError if the neurons' ``dt`` differ (the steps would have no single length)."""
    import spiking
    from spiking.models.recurrent import Recurrent
    from spiking.neurons.base import Neuron

    seq = model if isinstance(model, spiking.Sequential) else model.to_sequential()
    dts, cells = {}, {}
    for i, layer in enumerate(seq):
        neuron = layer.neuron if isinstance(layer, Recurrent) else layer
        if not isinstance(neuron, Neuron):
            continue
        dts[f"pop{i}"] = float(neuron.dt)
        if type(neuron) in (spiking.LIF, spiking.CubaLIF):
            cells[f"pop{i}"] = lif_cell_params(neuron)
            if neuron.reset != "zero":
                cells[f"pop{i}"]["note"] = (f"our reset is {neuron.reset!r}; IF_curr_exp sets "
                                            f"the membrane to v_reset")
        else:
            cells[f"pop{i}"] = {"unsupported": f"{type(neuron).__name__} has no IF_curr_exp form"}
    if len(set(dts.values())) > 1:
        raise ValueError(f"PyNN lists: the neuron layers have different dt {dts}; delays in "
                         f"steps have no single length in ms")
    if not dts:
        raise ValueError("PyNN lists: the model has no neuron layer, so no dt for the delays")
    return pynn_lists(mapping, cells, dt_ms=next(iter(dts.values())) * 1e3)


def lif_cell_params(neuron) -> dict:
    """``IF_curr_exp`` parameters of a spiking LIF/CubaLIF (times in ms)."""
    import torch

    def val(t):
        t = torch.as_tensor(t).detach().double()
        return float(t.flatten()[0]) if t.numel() else 0.0
    p = {"tau_m": val(neuron.tau_mem) * 1e3, "v_thresh": val(neuron.threshold),
         "v_reset": val(neuron.v_reset), "v_rest": val(neuron.v_leak),
         "tau_refrac": 0.0}
    if getattr(neuron, "tau_syn", None) is not None:
        p["tau_syn_E"] = p["tau_syn_I"] = val(neuron.tau_syn) * 1e3
    return p
