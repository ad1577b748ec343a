r"""Memristive crossbars: a device model, weight -> conductance mapping, non-ideal inference,
and event-driven energy / latency.

**Device** (:class:`Device`, SI units): conductance window ``[g_min, g_max]`` (S), ``levels``
programmable states (``None``: analog, unlimited), programming noise, read noise, drift,
stuck-at faults, read voltage and pulse. **Geometry** (:class:`Geometry`): arrays of ``rows``
x ``cols`` cells; a weight is a differential pair ``(G+, G-)`` on two columns of one array,
so an array holds ``rows x cols // 2`` weights; ADC / DAC resolution, energy per conversion,
ADCs per array and conversion time. Defaults and the packaged values
(``profiles/rram.toml`` ``[crossbar]``, :func:`load_device`) cite their sources there.

**Programming** (:func:`program`, once, seeded), for ``W`` ``[out, in]`` laid out as rows =
inputs, columns = outputs, with the per-layer scale ``k = (g_max - g_min) / max|W|``::

    G+ = g_min + k * max(W, 0)        G- = g_min + k * max(-W, 0)      (so G+ - G- = k W)
    levels:   G <- g_min + round((G - g_min) / q) * q,   q = (g_max - g_min) / (levels - 1)
    noise:    G <- clip(G + prog_noise * (g_max - g_min) * N(0, 1), g_min, g_max)
    faults:   per cell, with probability p_sa0: G = g_min (stuck-at-0, HRS);
              with probability p_sa1: G = g_max (stuck-at-1, LRS)
    drift:    per cell exponent nu ~ max(N(drift_nu, drift_nu_std), 0)

**Reading** at ``t_read`` seconds after programming: ``G(t) = G0 (t / drift_t0)^-nu`` for
``t > drift_t0`` (power-law drift, Ielmini et al. 2007; no drift compensation). A layer's
forward on ``x`` ``[..., in]`` (:class:`CrossbarLinear`)::

    DAC:   x <- round(x / fs * m) * fs / m,  m = 2^(dac_bits - 1) - 1, fs = max|x| of the call
           (signed drive; 0/1 spikes are exact); row voltage V_i = v_read * x_i / fs
    per row tile r (``rows`` inputs): y_r = x_r (G+_r - G-_r) / k   + read noise
    read noise: every cell read is G (1 + read_noise * N(0, 1)), independently per cell, read
           and sample; summed over a column this is exactly
           y_r += read_noise / k * sqrt(x_r^2 (G+_r^2 + G-_r^2)) * N(0, 1)  per output
    ADC:   y_r <- round(y_r / fs_r * m) * fs_r / m, m = 2^(adc_bits - 1) - 1, fs_r = max|y_r|
           of the call (an ideal auto-ranging ADC per differential pair: an assumption)
    y = sum_r y_r + bias                  (partial sums and bias added digitally)

With ``levels=None``, no noise, faults or drift and ``adc_bits = dac_bits = None`` this is
``x W^T + b`` up to float64 rounding of ``G+ - G-`` (tests: <= 1e-6 relative in float32).

**Energy and latency** (event-driven row activation: only rows with a non-zero input are
driven; accumulated per call, :func:`measure` reports per inference). For each sample-step
and row tile with ``d`` driven rows, each column tile with ``c`` weight pairs:
``2 d c`` cell reads, ``d`` DAC conversions (each array has its own row drivers), ``c`` ADC
conversions (one per pair; none if ``d = 0``); array energy ``t_pulse * sum_i V_i^2 *
sum_j (G+_ij + G-_ij)`` over driven rows (exact Joule heating of the read, ``V^2 G t``);
latency per sample-step with any driven row ``t_pulse + ceil(pairs per array /
adcs_per_array) * t_adc`` (all tiles in parallel; layers and steps sequential).

``wrap(model, device, geometry, seed)`` returns a copy of ``model`` in which every
``nn.Linear`` (including :class:`~spiking.models.recurrent.Recurrent`'s input and recurrent
ones) is a :class:`CrossbarLinear`; each layer draws from its own seeded generator.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Device:
    """Memristive device (SI units: siemens, seconds, volts; ratios are dimensionless)."""

    g_min: float = 1e-6
    g_max: float = 40e-6
    levels: int | None = None
    prog_noise: float = 0.0          # std of the programmed G / (g_max - g_min)
    read_noise: float = 0.0          # std of one read / G
    drift_nu: float = 0.0
    drift_nu_std: float = 0.0
    drift_t0: float = 1.0
    t_read: float = 1.0              # seconds since programming at inference
    p_sa0: float = 0.0
    p_sa1: float = 0.0
    v_read: float = 0.2
    t_pulse: float = 10e-9
    name: str = "ideal"

    def __post_init__(self):
        if not 0 <= self.g_min < self.g_max or not math.isfinite(self.g_max):
            raise ValueError(f"need 0 <= g_min < g_max, got g_min={self.g_min}, "
                             f"g_max={self.g_max}")
        if self.levels is not None and (not isinstance(self.levels, int) or self.levels < 2):
            raise ValueError(f"levels must be an int >= 2 or None, got {self.levels!r}")
        for k in ("prog_noise", "read_noise", "drift_nu", "drift_nu_std", "v_read", "t_pulse"):
            if not getattr(self, k) >= 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)!r}")
        if not (0 <= self.p_sa0 <= 1 and 0 <= self.p_sa1 <= 1 and self.p_sa0 + self.p_sa1 <= 1):
            raise ValueError(f"stuck-at rates must be in [0, 1] with p_sa0 + p_sa1 <= 1, got "
                             f"{self.p_sa0}, {self.p_sa1}")
        if self.drift_t0 <= 0 or self.t_read <= 0:
            raise ValueError(f"drift_t0 and t_read must be > 0 s, got {self.drift_t0}, "
                             f"{self.t_read}")


@dataclass(frozen=True)
class Geometry:
    rows: int = 256
    cols: int = 256
    adc_bits: int | None = 8
    dac_bits: int | None = 8
    e_adc: float = 2e-12             # J per conversion
    e_dac: float = 0.1e-12           # J per driven row
    adcs_per_array: int = 16
    t_adc: float = 10e-9             # s per conversion

    def __post_init__(self):
        if self.rows < 1 or self.cols < 2 or self.cols % 2:
            raise ValueError(f"need rows >= 1 and an even cols >= 2 (differential pairs), got "
                             f"{self.rows} x {self.cols}")
        for k in ("adc_bits", "dac_bits"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{k} must be an int >= 2 (signed) or None, got {v!r}")
        if self.adcs_per_array < 1:
            raise ValueError(f"adcs_per_array must be >= 1, got {self.adcs_per_array}")

    @property
    def pairs(self) -> int:
        return self.cols // 2


# TOML key (unit-suffixed) -> (dataclass, field, factor to SI)
_KEYS = {"g_min_siemens": (Device, "g_min", 1.0), "g_max_siemens": (Device, "g_max", 1.0),
         "levels_count": (Device, "levels", None), "prog_noise_ratio": (Device, "prog_noise", 1),
         "read_noise_ratio": (Device, "read_noise", 1.0),
         "drift_nu_ratio": (Device, "drift_nu", 1.0),
         "drift_nu_std_ratio": (Device, "drift_nu_std", 1.0),
         "drift_t0_s": (Device, "drift_t0", 1.0), "t_read_s": (Device, "t_read", 1.0),
         "p_sa0_ratio": (Device, "p_sa0", 1.0), "p_sa1_ratio": (Device, "p_sa1", 1.0),
         "v_read_v": (Device, "v_read", 1.0), "t_pulse_ns": (Device, "t_pulse", 1e-9),
         "rows_count": (Geometry, "rows", None), "cols_count": (Geometry, "cols", None),
         "adc_bits": (Geometry, "adc_bits", None), "dac_bits": (Geometry, "dac_bits", None),
         "e_adc_pj": (Geometry, "e_adc", 1e-12), "e_dac_pj": (Geometry, "e_dac", 1e-12),
         "adcs_per_array_count": (Geometry, "adcs_per_array", None),
         "t_adc_ns": (Geometry, "t_adc", 1e-9)}


def load_device(name_or_path="rram") -> tuple[Device, Geometry]:
    """The ``[crossbar]`` table of a device profile (packaged name or ``.toml`` path)."""
    from spiking.hardware import energy

    p = Path(name_or_path)
    path = p if (p.suffix == ".toml" or p.exists()) else energy.PROFILE_DIR / f"{p}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"device profile {path} not found")
    data = energy._load_toml(path)
    table = data.get("crossbar")
    if not isinstance(table, dict):
        raise ValueError(  # noqa: TRY004
            f"{path}: no [crossbar] table (device and array parameters)")
    kw = {Device: {"name": str(data.get("name", path.stem))}, Geometry: {}}
    for key, val in table.items():
        if key not in _KEYS:
            raise ValueError(f"{path}: [crossbar] key {key!r} unknown; expected one of "
                             f"{', '.join(_KEYS)}")
        cls, attr, factor = _KEYS[key]
        kw[cls][attr] = val if factor is None else float(val) * factor
    return Device(**kw[Device]), Geometry(**kw[Geometry])


# ------------------------------------------------------------------------- programming
@dataclass
class Programmed:
    """Programmed conductances ``[in, out]`` (S, float64) of one layer, before drift."""

    g_pos: torch.Tensor
    g_neg: torch.Tensor
    scale: float                     # k: siemens per weight unit
    nu: torch.Tensor | None          # [2, in, out] drift exponents, None without drift
    stuck: torch.Tensor              # [2, in, out] int8: 0 ok, 1 SA0, 2 SA1


def _levels(g: torch.Tensor, dev: Device) -> torch.Tensor:
    q = (dev.g_max - dev.g_min) / (dev.levels - 1)
    return dev.g_min + torch.round((g - dev.g_min) / q) * q


def program_conductances(target: torch.Tensor, dev: Device, gen: torch.Generator):
    """Program cells to ``target`` conductances (S): levels, programming noise, stuck-at
    faults in that order. Returns ``(G, stuck)`` with ``stuck`` 0 / 1 (SA0) / 2 (SA1)."""
    g = target.double()
    if dev.levels is not None:
        g = _levels(g, dev)
    if dev.prog_noise > 0:
        z = torch.randn(g.shape, generator=gen, dtype=torch.float64)
        g = (g + dev.prog_noise * (dev.g_max - dev.g_min) * z).clamp(dev.g_min, dev.g_max)
    stuck = torch.zeros(g.shape, dtype=torch.int8)
    if dev.p_sa0 > 0 or dev.p_sa1 > 0:
        u = torch.rand(g.shape, generator=gen, dtype=torch.float64)
        sa0, sa1 = u < dev.p_sa0, (u >= dev.p_sa0) & (u < dev.p_sa0 + dev.p_sa1)
        g = torch.where(sa0, dev.g_min, torch.where(sa1, dev.g_max, g))
        stuck[sa0], stuck[sa1] = 1, 2
    return g, stuck


def program(weight: torch.Tensor, dev: Device, gen: torch.Generator) -> Programmed:
    """Map ``weight`` ``[out, in]`` to differential pairs (see the module docstring)."""
    w = weight.detach().double().T.cpu()
    amax = float(w.abs().max()) if w.numel() else 0.0
    scale = (dev.g_max - dev.g_min) / amax if amax > 0 else 1.0
    g, stuck = program_conductances(
        torch.stack([dev.g_min + scale * w.clamp_min(0), dev.g_min + scale * (-w).clamp_min(0)]),
        dev, gen)
    nu = None
    if dev.drift_nu > 0 or dev.drift_nu_std > 0:
        nu = (dev.drift_nu + dev.drift_nu_std * torch.randn(g.shape, generator=gen,
                                                            dtype=torch.float64)).clamp_min(0)
    return Programmed(g[0], g[1], scale, nu, stuck)


def read_conductances(p: Programmed, dev: Device) -> torch.Tensor:
    """``[2, in, out]`` conductances at ``dev.t_read`` (drift applied, no read noise)."""
    g = torch.stack([p.g_pos, p.g_neg])
    if p.nu is not None and dev.t_read > dev.drift_t0:
        g = g * (dev.t_read / dev.drift_t0) ** (-p.nu)
    return g


def _quantise(v: torch.Tensor, bits: int) -> torch.Tensor:
    fs = v.abs().max()
    if fs == 0:
        return v
    m = 2 ** (bits - 1) - 1
    return torch.round(v / fs * m) * fs / m


_STATS = ("rows", "cell_reads", "dac", "adc", "e_array_j", "latency_s")


class CrossbarLinear(nn.Linear):
    """An ``nn.Linear`` computed on memristive crossbars (drop-in; see the module docstring).

    ``weight`` and ``bias`` keep the float values (for counting and export); the forward uses
    the programmed conductances. ``stats`` accumulates event-driven costs over calls."""

    def __init__(self, linear: nn.Linear, device: Device, geometry: Geometry, seed: int = 0,
                 weight: torch.Tensor | None = None):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device="meta")
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = (None if linear.bias is None else
                     nn.Parameter(linear.bias.detach().clone(), requires_grad=False))
        self.device_model, self.geometry, self.seed = device, geometry, int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.programmed = program(self.weight if weight is None else weight, device, gen)
        self.conductances = read_conductances(self.programmed, device)   # [2, in, out]
        # [out, in], contiguous like nn.Linear's weight (the same GEMM path: bitwise equal
        # outputs when the mapping is ideal)
        self._w_eff = ((self.conductances[0] - self.conductances[1]).T
                       / self.programmed.scale).contiguous()
        self._read_gen = torch.Generator().manual_seed(self.seed + 1)
        self.reset_stats()

    def reset_stats(self, reseed: bool = False) -> None:
        self.stats = dict.fromkeys(_STATS, 0.0)
        if reseed:
            self._read_gen.manual_seed(self.seed + 1)

    def _row_tiles(self):
        r = self.geometry.rows
        return [(a, min(a + r, self.in_features)) for a in range(0, self.in_features, r)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev, geo = self.device_model, self.geometry
        shape = x.shape
        xf = x.detach().reshape(-1, self.in_features)
        if geo.dac_bits is not None:
            xf = _quantise(xf, geo.dac_bits)
        self._account(xf)
        w = self._w_eff.to(x.device, x.dtype)
        tiles = self._row_tiles() if geo.adc_bits is not None else [(0, self.in_features)]
        y = None
        for a, b in tiles:
            xr = xf[:, a:b]
            yr = nn.functional.linear(xr, w if len(tiles) == 1 else w[:, a:b])
            if dev.read_noise > 0:
                g2 = (self.conductances[:, a:b] ** 2).sum(0).to(x.device)
                std = dev.read_noise / self.programmed.scale * (
                    xr.double() ** 2 @ g2).sqrt()
                z = torch.randn(std.shape, generator=self._read_gen, dtype=torch.float64)
                yr = yr + (std * z.to(std.device)).to(yr.dtype)
            if geo.adc_bits is not None:
                yr = _quantise(yr, geo.adc_bits)
            y = yr if y is None else y + yr
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    @torch.no_grad()
    def _account(self, xf: torch.Tensor) -> None:
        dev, geo = self.device_model, self.geometry
        st = self.stats
        st["rows"] += xf.shape[0]
        fs = float(xf.abs().max()) if xf.numel() else 0.0
        if fs == 0:
            return
        v2 = (dev.v_read * xf.double() / fs) ** 2                     # [M, in]
        gsum = self.conductances.sum(0).sum(1).to(xf.device)          # [in]
        col_pairs = [min(geo.pairs, self.out_features - c)
                     for c in range(0, self.out_features, geo.pairs)]
        n_col = len(col_pairs)
        any_row = torch.zeros(xf.shape[0], dtype=torch.bool, device=xf.device)
        for a, b in self._row_tiles():
            driven = (xf[:, a:b] != 0).sum(1).double()                 # [M]
            active = driven > 0
            any_row |= active
            st["cell_reads"] += float(driven.sum()) * 2 * self.out_features
            st["dac"] += float(driven.sum()) * n_col
            st["adc"] += float(active.sum()) * self.out_features
            st["e_array_j"] += float((v2[:, a:b] @ gsum[a:b]).sum()) * dev.t_pulse
        per_step = dev.t_pulse + math.ceil(min(geo.pairs, self.out_features)
                                           / geo.adcs_per_array) * geo.t_adc
        st["latency_s"] += float(any_row.sum()) * per_step

    def tiles(self, prefix: str) -> dict:
        """Conductance maps ``{f"{prefix}.r{i}c{j}": [2, rows_i, pairs_j]}`` (S, at t_read)."""
        out, geo = {}, self.geometry
        for i, (a, b) in enumerate(self._row_tiles()):
            for j, c in enumerate(range(0, self.out_features, geo.pairs)):
                d = min(c + geo.pairs, self.out_features)
                out[f"{prefix}.r{i}c{j}"] = self.conductances[:, a:b, c:d].numpy().copy()
        return out

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, device={self.device_model.name!r}, "
                f"array={self.geometry.rows}x{self.geometry.cols}")


def _crossbar_drive(layer, spikes):
    """Recurrent.recurrent_drive through the crossbar (bound per instance by :func:`wrap`)."""
    return layer.recurrent(spikes)


def wrap(model: nn.Module, device: Device | None = None, geometry: Geometry | None = None,
         seed: int = 0, inplace: bool = False) -> nn.Module:
    """``model`` with every ``nn.Linear`` replaced by a :class:`CrossbarLinear` (a copy unless
    ``inplace``). Layer ``k`` (in ``named_modules`` order) is seeded with ``seed * 7919 + k``."""
    from spiking.models.recurrent import Recurrent

    device = Device() if device is None else device
    geometry = Geometry() if geometry is None else geometry
    m = model if inplace else copy.deepcopy(model)
    if isinstance(m, nn.Linear) and not isinstance(m, CrossbarLinear):
        return CrossbarLinear(m, device, geometry, seed * 7919)
    k = 0
    for mod in list(m.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear) and not isinstance(child, CrossbarLinear):
                w = None
                if isinstance(mod, Recurrent) and name == "recurrent" and not mod.autapses:
                    w = child.weight * mod._autapse_mask
                setattr(mod, name, CrossbarLinear(child, device, geometry, seed * 7919 + k, w))
                k += 1
        if isinstance(mod, Recurrent) and mod.recurrent_kind == "dense":
            mod.recurrent_drive = types.MethodType(_crossbar_drive, mod)
    return m


def layers(model: nn.Module) -> dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, CrossbarLinear)}


@dataclass(frozen=True)
class CrossbarReport:
    """Per inference (per sample): event-driven costs of a wrapped model's crossbars."""

    layers: dict                      # name -> stats per inference
    energy_j: float
    latency_s: float
    breakdown_j: dict = field(default_factory=dict)


def report(model: nn.Module, samples: int) -> CrossbarReport:
    """Costs accumulated in ``model``'s crossbar layers, divided by ``samples``."""
    per, tot = {}, dict.fromkeys(_STATS, 0.0)
    geo = None
    for name, lay in layers(model).items():
        per[name] = {k: v / samples for k, v in lay.stats.items()}
        geo = lay.geometry
        e = (lay.stats["e_array_j"] + lay.stats["adc"] * geo.e_adc
             + lay.stats["dac"] * geo.e_dac) / samples
        per[name]["energy_j"] = e
        for k in _STATS:
            tot[k] += per[name][k]
    if geo is None:
        raise ValueError("model has no CrossbarLinear layers (wrap it with crossbar.wrap)")
    parts = {"array reads": tot["e_array_j"], "ADC": sum(
        lay.stats["adc"] * lay.geometry.e_adc for lay in layers(model).values()) / samples,
        "DAC": sum(lay.stats["dac"] * lay.geometry.e_dac
                   for lay in layers(model).values()) / samples}
    return CrossbarReport(per, sum(parts.values()), tot["latency_s"], parts)


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, forward=None) -> CrossbarReport:
    """Reset the wrapped ``model``'s counters, run it on ``x`` ``[T, B, ...]`` and report the
    energy and latency per inference."""
    for lay in layers(model).values():
        lay.reset_stats()
    (forward or (lambda m, inp: m(inp)))(model, x)
    return report(model, int(x.shape[1]))


def device_fields() -> list[str]:
    return [f.name for f in fields(Device)] + [f.name for f in fields(Geometry)]


def export_tiles(model: nn.Module) -> tuple[dict, dict]:
    """Per-tile conductance maps of a wrapped model and their metadata, for
    :func:`spiking.hardware.weightmap.write_weightmap` (``crossbar_tiles``, ``crossbar_meta``).
    A tile ``<layer>.r<i>c<j>`` is ``[2, rows, pairs]`` (G+, G-) in S; its metadata gives the
    layer, the input rows ``[row_start, row_stop)`` and output columns ``[col_start,
    col_stop)`` it holds and the layer's scale ``k`` (S per weight unit: W = (G+ - G-) / k)."""
    tiles, meta = {}, {}
    for name, lay in layers(model).items():
        name = name or "linear"
        for key, g in lay.tiles(name).items():
            i, j = (int(v) for v in key.rsplit(".", 1)[1][1:].split("c"))
            r0, c0 = i * lay.geometry.rows, j * lay.geometry.pairs
            tiles[key] = g
            meta[key] = {"layer": name, "row_start": r0, "row_stop": r0 + g.shape[1],
                         "col_start": c0, "col_stop": c0 + g.shape[2],
                         "scale_siemens_per_unit": lay.programmed.scale,
                         "in_features": lay.in_features, "out_features": lay.out_features}
    return tiles, meta


def weights_from_tiles(tiles: dict, meta: dict, layer: str) -> torch.Tensor:
    """Reassemble a layer's effective weight ``[out, in]`` from exported tiles."""
    keys = [k for k in tiles if meta[k]["layer"] == layer]
    if not keys:
        raise ValueError(f"no crossbar tiles for layer {layer!r}; layers: "
                         f"{sorted({m['layer'] for m in meta.values()})}")
    m0 = meta[keys[0]]
    w = torch.zeros(m0["out_features"], m0["in_features"], dtype=torch.float64)
    for k in keys:
        m, g = meta[k], torch.as_tensor(tiles[k])
        w[m["col_start"]:m["col_stop"], m["row_start"]:m["row_stop"]] = (
            (g[0] - g[1]) / m["scale_siemens_per_unit"]).T
    return w


__all__ = [
    "CrossbarLinear",
    "Device",
    "Geometry",
    "load_device",
    "measure",
    "program",
    "program_conductances",
    "read_conductances",
    "replace",
    "report",
    "wrap",
]
