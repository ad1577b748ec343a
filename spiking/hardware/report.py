"""Hardware reports: Markdown + JSON with plots, and the demo's energy section.

Every energy figure is printed beside the raw counts it came from and labelled an estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spiking.hardware import counting, energy

HARDWARE = {"spinnaker2": "spinnaker2", "spinnaker1": "spinnaker1", "loihi": "loihi",
            "truenorth": "truenorth", "rram": "rram", "cmos45nm": "cmos45nm",
            "gpu": "gpu_a100", "gpu_a100": "gpu_a100"}


def _delay_cores(mapping) -> str:
    n = mapping.n_delay_cores
    return f" (+{n} delay-extension core{'s' * (n > 1)} for delays over " \
        f"{mapping.machine.max_delay_steps} steps)" if n else ""


def example_input(model: nn.Module, *, steps: int = 50, batch: int = 1, rate: float = 0.1,
                  input_shape=None, seed: int = 0) -> torch.Tensor:
    """Bernoulli spikes ``[T, B, ...]`` for ``model``: the shape is ``input_shape``, else the
    model's own ``input_shape`` attribute, else the first Linear layer's ``in_features``."""
    if input_shape is None and getattr(model, "input_shape", None) is not None:
        input_shape = tuple(model.input_shape)  # models that know their input (CSNN, ...)
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d,
                                                                    nn.Conv1d))), None)
        if not isinstance(first, nn.Linear):
            raise ValueError("cannot infer the input shape of this model (its first weight "
                             "layer is not a Linear); pass input_shape / --input-shape")
        input_shape = (first.in_features,)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((steps, batch, *input_shape), generator=g) < rate).float()


def _plots(out: Path, estimates, prof, spikes) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [e.device for e in estimates]
    bottom = np.zeros(len(estimates))
    parts = sorted({k for e in estimates for k in e.breakdown()})
    for part in parts:
        vals = np.array([e.breakdown().get(part, 0.0) * 1e6 for e in estimates])
        ax.bar(names, vals, bottom=bottom, label=part)
        bottom += vals
    ax.set_yscale("log") if bottom.max() > 100 * max(bottom.min(), 1e-12) else None
    ax.set_ylabel("estimated energy per inference (uJ)")
    ax.set_title("Energy breakdown by device (estimate)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "energy_breakdown.png", dpi=120)
    plt.close(fig)
    files.append("energy_breakdown.png")
    if prof is not None:
        fig, ax = plt.subplots(figsize=(7, 3))
        im = ax.imshow(prof.load.T, aspect="auto", origin="lower", cmap="viridis")
        fig.colorbar(im, ax=ax, label="load (cycles / budget)")
        ax.set_xlabel("time step")
        ax.set_ylabel("core")
        ax.set_title("Core load")
        fig.tight_layout()
        fig.savefig(out / "core_load.png", dpi=120)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 2.5))
        ax.plot(prof.packets_sent.sum(1), label="sent")
        ax.plot(prof.packets_received.sum(1), label="received")
        ax.set_xlabel("time step")
        ax.set_ylabel("packets")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "packets_per_step.png", dpi=120)
        plt.close(fig)
        files += ["core_load.png", "packets_per_step.png"]
    if spikes:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        offset = 0
        for s in spikes.values():
            t, n = np.nonzero(np.asarray(s))
            ax.scatter(t, n + offset, s=1, c="k")
            offset += np.asarray(s).shape[1]
        ax.set_xlabel("time step")
        ax.set_ylabel("neuron (populations stacked)")
        ax.set_title("Activity raster (sample 0)")
        fig.tight_layout()
        fig.savefig(out / "raster.png", dpi=120)
        plt.close(fig)
        files.append("raster.png")
    return files


def profile_report(model: nn.Module, x: torch.Tensor, out_dir, *, hardware="spinnaker2",
                   compare=("cmos45nm", "loihi", "spinnaker2", "truenorth", "rram",
                            "gpu_a100")) -> Path:
    """Count ``model`` on ``x``, estimate energy on ``hardware`` (and the ``compare`` devices),
    map it SpiNNaker-like where possible, and write ``report.md``, ``report.json`` and plots
    into ``out_dir``. Returns the Markdown path."""
    from spiking.hardware import spinnaker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = HARDWARE.get(hardware, hardware)
    counts = counting.count(model, x)
    devices = [dev] + [d for d in compare if d != dev]
    ests = [energy.estimate(counts, d) for d in devices]
    prof = spikes = mapping = None
    map_note = ""
    try:
        pops, projs, spikes = spinnaker.network_from_model(model, x)
        mapping = spinnaker.map_network(pops, projs)
        prof = spinnaker.execution_profile(mapping, spikes)
    except (TypeError, ValueError) as e:
        map_note = f"SpiNNaker-like mapping not available for this model: {e}"
    plots = _plots(out, ests, prof, spikes)
    md = [f"# Hardware report ({dev})", "",
          ("All energies are **estimates** (operation counts x published or assumed "
          "per-operation energies, see each profile's sources), not measurements."), "",
          "## Raw counts", "", counts.to_markdown(), "", f"## Energy on {dev}", "",
          ests[0].to_markdown(), "", "## Devices compared", "",
          energy.comparison_markdown(ests), ""]
    js = {"hardware": dev, "counts": counts.to_dict(),
          "energy": [e.to_dict() for e in ests], "plots": plots}
    if prof is not None:
        q = {k: {"frac_bits": v.frac_bits, "zeroed": v.zeroed, "saturated": v.saturated}
             for k, v in mapping.quantised.items()}
        md += ["## SpiNNaker-like execution profile", "",
               (f"{mapping.n_cores} cores{_delay_cores(mapping)} on {mapping.n_chips} chip(s); "
               f"max load {prof.load.max():.3g} ({'real time' if prof.real_time else 'NOT real time'}); "
               f"synaptic events {prof.synaptic_events.sum():,.0f}, packets "
               f"{prof.packets_sent.sum():,.0f}; estimated energy "
               f"{prof.total_energy_j * 1e6:.4g} uJ "
               f"({', '.join(f'{k} {v * 1e6:.3g} uJ' for k, v in prof.energy_j.items())})."),
               "", ("Why this differs from the device table above: the table charges the "
                    "profile's whole-chip static power for the run's time (a chip running only "
                    "this network), while the execution profile charges idle power only for "
                    "the cores this mapping occupies (the chip's static power / its cores, x cores "
                    "used, x the same duration: a network sharing a larger machine). Both are "
                    "estimates."),
               "", f"Fixed-point weights: {q}", ""]
        js["spinnaker"] = {"cores": mapping.n_cores, "delay_cores": mapping.n_delay_cores,
                           "max_load": float(prof.load.max()),
                           "real_time": prof.real_time, "energy_j": prof.energy_j,
                           "quantisation": q}
    elif map_note:
        md += [map_note, ""]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    (out / "report.json").write_text(json.dumps(js, indent=1, default=float))
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def demo_section(model: nn.Module, batch, *, out_dir=None,
                 devices=("cmos45nm", "loihi", "spinnaker2", "gpu_a100")) -> str:
    """Markdown for the demo: the energy table (estimates, with the raw counts) of ``model`` on
    ``batch`` (``[T, B, ...]`` or a ``(x, y)`` pair) and, with ``out_dir``, the exports: a NIR
    file ``model.nir`` and the event-driven weight map ``weightmap/`` of the SpiNNaker-like
    mapping (with its cores, chips and execution profile on the batch's first sample). An
    export the model does not allow (e.g. max pooling) is a one-line note, never an error."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    counts = counting.count(model, x)
    ests = [energy.estimate(counts, d) for d in devices]
    t = counts.totals()
    lines = ["### Hardware estimate", "",
             (f"Per inference (B = {counts.samples}, T = {counts.steps}): effective ACs "
             f"{t['effective_acs']:,.0f}, effective MACs {t['effective_macs']:,.0f}, dense "
             f"synaptic ops {t['dense']:,.0f}, spikes {t['spikes']:,.0f}, membrane updates "
             f"{t['membrane_updates_dense']:,.0f}; activation sparsity "
             f"{counts.activation_sparsity:.3f}."), "",
             "Estimated energy (counts x per-operation energies; not measured):", "",
             energy.comparison_markdown(ests)]
    if out_dir is not None:
        out = Path(out_dir)
        try:
            from spiking.hardware.export import write_nir

            p = write_nir(model, x, out / "model.nir")
            lines += ["", f"NIR export: `{p}`"]
        except (ImportError, TypeError, ValueError) as e:
            lines += ["", f"NIR export not available: {e}"]
        lines += ["", _weightmap_note(model, x, out)]
    return "\n".join(lines)


def _weightmap_note(model: nn.Module, x: torch.Tensor, out: Path) -> str:
    """Map ``model`` SpiNNaker-like, write ``out/weightmap`` and summarise it in one line."""
    import copy

    try:
        from spiking.hardware import spinnaker
        from spiking.hardware.weightmap import write_weightmap

        cpu_model = copy.deepcopy(model).cpu() if x.device.type != "cpu" else model
        with torch.no_grad():
            pops, projs, spikes = spinnaker.network_from_model(cpu_model, x.cpu())
        mapping = spinnaker.map_network(pops, projs)
        p = write_weightmap(out / "weightmap", mapping, overwrite=True)
        prof = spinnaker.execution_profile(mapping, spikes)
    except (ImportError, RuntimeError, TypeError, ValueError) as e:
        return f"Weight map (SpiNNaker-like mapping) not available: {e}"
    n_syn = sum(int(pr.pre_idx.size) for pr in mapping.projections)
    chips = mapping.n_chips
    return (f"Weight map (SpiNNaker-like mapping, event-driven): `{p}`: "
            f"{sum(pops.values()):,} neurons in {len(pops)} populations (input included), "
            f"{n_syn:,} synapses in {len(projs)} projections on {mapping.n_cores} cores"
            f"{_delay_cores(mapping)} of "
            f"{chips} chip(s); sample 0: max core load {prof.load.max():.3g} "
            f"({'real time' if prof.real_time else 'NOT real time'}), "
            f"{prof.synaptic_events.sum():,.0f} synaptic events, estimated "
            f"{prof.total_energy_j * 1e6:.3g} uJ (estimate, not measured).")
