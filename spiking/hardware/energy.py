"""Energy estimates: operation counts x per-operation energies + static power x time.

A device profile is a TOML file (``spiking/hardware/profiles/*.toml`` or your own)::

    name = "mychip"
    source = "paper, table"          # required: where the numbers come from
    event_driven = true              # false: price dense counts (a GPU does not skip zeros)
    [values]                         # every key carries its unit: _pj _nj _uj _fj _mw _w _uw
    e_synop_pj = 23.6                # _s _ms _us _ns ...
    [sources]                        # optional per-key citation (else the profile's source)
    e_synop_pj = "Table 1, ..."

Priced terms (a missing key costs nothing; ``e_synop`` prices MACs and ACs where ``e_mac`` /
``e_ac`` are absent), with the counts of :mod:`spiking.hardware.counting`:

============================  ======================================================
``e_mac``                     effective MACs (dense synaptic ops when not event-driven)
``e_ac``                      effective ACs (0 when not event-driven: all ops are MACs)
``e_neuron_update``           dense membrane updates (every neuron, every step)
``e_neuron_op``               dense neuron operations
``e_spike``                   spikes
``e_weight_read``             weight reads (event-driven, or dense)
``e_state_access``            state reads + state writes
``p_static`` x ``t_step``     static power x (T steps x step duration)
============================  ======================================================

Everything is per sample (per inference). The result is an estimate: it multiplies counts by
published or assumed per-operation figures; the report always prints the raw counts beside it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

_ENERGY = {"fj": 1e-3, "pj": 1.0, "nj": 1e3, "uj": 1e6, "mj": 1e9, "j": 1e12}   # -> pJ
_POWER = {"uw": 1e-3, "mw": 1.0, "w": 1e3}                                          # -> mW
_TIME = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}                              # -> s
_OTHER = ("mhz", "ghz", "hz", "bits", "bytes", "kib", "count", "ratio", "v", "us_per_cycle",
          "cycles")
UNIT_SUFFIXES = tuple(_ENERGY) + tuple(_POWER) + tuple(_TIME) + _OTHER

TERMS = ("e_mac", "e_ac", "e_synop", "e_neuron_update", "e_neuron_op", "e_spike",
         "e_weight_read", "e_state_access")


def _unit(key: str) -> str | None:
    for suf in sorted(UNIT_SUFFIXES, key=len, reverse=True):
        if key.endswith("_" + suf):
            return suf
    return None


@dataclass(frozen=True)
class DeviceProfile:
    """A device's per-operation energies (pJ), static power (mW) and step time (s)."""

    name: str
    source: str
    description: str = ""
    event_driven: bool = True
    energies_pj: dict = field(default_factory=dict)     # canonical term -> pJ
    p_static_mw: float = 0.0
    t_step_s: float = 1e-3
    values: dict = field(default_factory=dict)          # raw key -> value, as in the file
    sources: dict = field(default_factory=dict)         # raw key -> citation
    path: str = ""

    def source_of(self, key: str) -> str:
        return self.sources.get(key, self.source)


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from e


def parse_profile(data: dict, path: str = "<profile>") -> DeviceProfile:
    """Validate a profile dict (as read from TOML); errors name the file and the key."""
    src = data.get("source")
    if not isinstance(src, str) or not src.strip():
        raise ValueError(f"{path}: profile has no 'source' (a citation for its numbers is "
                         f"required)")
    values = data.get("values")
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{path}: profile has no [values] table")
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise TypeError(f"{path}: [sources] must be a table of key = \"citation\"")
    energies, p_static, t_step = {}, 0.0, 1e-3
    for key, val in values.items():
        unit = _unit(key)
        if unit is None:
            raise ValueError(f"{path}: key {key!r} has no unit suffix; expected one of "
                             f"{', '.join('_' + u for u in UNIT_SUFFIXES)}")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise ValueError(f"{path}: key {key!r} must be a finite number, got {val!r}")
        if val < 0:
            raise ValueError(f"{path}: key {key!r} must be >= 0, got {val!r}")
        stem = key[: -len(unit) - 1]
        if stem in TERMS:
            if unit not in _ENERGY:
                raise ValueError(f"{path}: key {key!r} is an energy; expected a unit of "
                                 f"{', '.join('_' + u for u in _ENERGY)}")
            energies[stem] = float(val) * _ENERGY[unit]
        elif stem == "p_static":
            if unit not in _POWER:
                raise ValueError(f"{path}: key {key!r} is a power; expected _uw, _mw or _w")
            p_static = float(val) * _POWER[unit]
        elif stem == "t_step":
            if unit not in _TIME:
                raise ValueError(f"{path}: key {key!r} is a time; expected _s, _ms, _us, _ns")
            t_step = float(val) * _TIME[unit]
    for key in sources:
        if key not in values:
            raise ValueError(f"{path}: [sources] names {key!r}, which is not in [values]")
    return DeviceProfile(
        name=str(data.get("name", Path(path).stem)), source=src.strip(),
        description=str(data.get("description", "")),
        event_driven=bool(data.get("event_driven", True)), energies_pj=energies,
        p_static_mw=p_static, t_step_s=t_step, values=dict(values),
        sources={k: str(v) for k, v in sources.items()}, path=str(path))


def available_profiles() -> list[str]:
    """Names of the packaged profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path) -> DeviceProfile:
    """A packaged profile by name (``"loihi"``) or a user profile from a ``.toml`` path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"device profile {p} not found")
        return parse_profile(_load_toml(p), str(p))
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(f"unknown device profile {name_or_path!r}; packaged profiles: "
                         f"{', '.join(available_profiles())} (or pass a path to a .toml file)")
    return parse_profile(_load_toml(path), str(path))


@dataclass(frozen=True)
class EnergyTerm:
    name: str            # e.g. "synaptic ops (ACs)"
    key: str             # the profile key that priced it
    count: float         # operations per sample
    unit_pj: float       # energy per operation (pJ)
    energy_j: float      # count x unit (J)
    source: str


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one inference (per sample) on one device: a breakdown and the total."""

    device: str
    terms: tuple
    static_j: float
    duration_s: float
    total_j: float
    counts: dict                        # the raw count totals it was computed from
    source: str = ""

    def breakdown(self) -> dict:
        out = {t.name: t.energy_j for t in self.terms}
        out["static"] = self.static_j
        return out

    def to_dict(self) -> dict:
        return {"device": self.device, "estimate": True, "total_j": self.total_j,
                "static_j": self.static_j, "duration_s": self.duration_s,
                "terms": [t.__dict__ for t in self.terms], "counts": self.counts,
                "source": self.source}

    def to_markdown(self) -> str:
        head = (f"**Estimated** energy per inference on `{self.device}`: "
                f"{self.total_j * 1e6:.4g} uJ (counts x per-operation energies + static "
                f"power x {self.duration_s:.3g} s; an estimate, not a measurement)")
        lines = [head, "",
                 "| term | count per sample | energy/op (pJ) | energy (uJ) | source |",
                 "|---|---:|---:|---:|---|"]
        for t in self.terms:
            lines.append(f"| {t.name} | {t.count:,.6g} | {t.unit_pj:.4g} | "
                         f"{t.energy_j * 1e6:.4g} | {t.source} |")
        lines.append(f"| static | {self.duration_s:.3g} s | | {self.static_j * 1e6:.4g} | |")
        lines.append(f"| **total** | | | **{self.total_j * 1e6:.4g}** | |")
        return "\n".join(lines)


def estimate(counts, profile, *, steps: int | None = None, t_step_s: float | None = None
             ) -> EnergyEstimate:
    """Energy per sample of a run with ``counts`` (a :class:`~spiking.hardware.counting.Counts`
    or a dict of totals with ``steps``) on ``profile`` (a name, path or DeviceProfile)."""
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    if hasattr(counts, "totals"):
        tot, steps = counts.totals(), counts.steps if steps is None else steps
    else:
        tot = dict(counts)
        steps = int(tot.get("steps", 0)) if steps is None else steps
    e = prof.energies_pj
    ed = prof.event_driven
    syn = e.get("e_synop")
    items = []
    if ed:
        items.append(("synaptic ops (MACs)", "e_mac" if "e_mac" in e else "e_synop",
                      tot.get("effective_macs", 0.0), e.get("e_mac", syn)))
        items.append(("synaptic ops (ACs)", "e_ac" if "e_ac" in e else "e_synop",
                      tot.get("effective_acs", 0.0), e.get("e_ac", syn)))
    else:
        items.append(("synaptic ops (dense MACs)", "e_mac" if "e_mac" in e else "e_synop",
                      tot.get("dense", 0.0), e.get("e_mac", syn)))
    items += [
        ("neuron updates", "e_neuron_update", tot.get("membrane_updates_dense", 0.0),
         e.get("e_neuron_update")),
        ("neuron ops", "e_neuron_op", tot.get("neuron_ops_dense", 0.0), e.get("e_neuron_op")),
        ("spikes", "e_spike", tot.get("spikes", 0.0), e.get("e_spike")),
        ("weight reads", "e_weight_read",
         tot.get("weight_reads" if ed else "weight_reads_dense", 0.0), e.get("e_weight_read")),
        ("state reads+writes", "e_state_access",
         tot.get("state_reads", 0.0) + tot.get("state_writes", 0.0), e.get("e_state_access")),
    ]
    terms = []
    for name, term, n, unit in items:
        if unit is None:
            continue
        key = next((k for k in prof.values if k.startswith(term + "_")
                    and k[len(term) + 1:] in _ENERGY), term)
        terms.append(EnergyTerm(name, key, float(n), unit, float(n) * unit * 1e-12,
                                prof.source_of(key)))
    duration = (steps or 0) * (prof.t_step_s if t_step_s is None else t_step_s)
    static = prof.p_static_mw * 1e-3 * duration
    total = sum(t.energy_j for t in terms) + static
    return EnergyEstimate(prof.name, tuple(terms), static, duration, total,
                          {k: float(v) for k, v in tot.items()}, prof.source)


def compare(counts, profiles=None) -> list[EnergyEstimate]:
    """Estimates of the same counts on several profiles (default: every packaged one)."""
    return [estimate(counts, p) for p in (profiles or available_profiles())]


def comparison_markdown(estimates) -> str:
    lines = ["| device | estimated energy per inference (uJ) | dominant term |",
             "|---|---:|---|"]
    for est in estimates:
        parts = est.breakdown()
        dom = max(parts, key=parts.get) if parts else ""
        lines.append(f"| {est.device} | {est.total_j * 1e6:.4g} | {dom} |")
    return "\n".join(lines)
