import pytest
import torch

import spiking
from spiking import plot


def test_raster_and_traces_write_pngs(tmp_path):
    x = torch.rand(100, 2, 10)
    s, _, traj = spiking.LIF(tau_mem=20e-3, backend="reference")(x, record=True)
    fig = plot.raster(s, dt=1e-3, sample=1)
    n_points = len(fig.axes[0].collections[0].get_offsets())
    assert n_points == int(s[:, 1].sum())
    p = plot.save(fig, tmp_path / "sub" / "raster.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = plot.save(plot.traces(traj.v, spikes=s, threshold=1.0, neurons=[0, 3]), tmp_path / "v.png")
    assert p.stat().st_size > 1000
    assert not list(tmp_path.glob("**/.*"))  # no temp files left behind


def test_plot_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        plot.raster(torch.zeros(5))
    with pytest.raises(ValueError, match=r"neurons \[7\] out of range for 3 neurons"):
        plot.traces(torch.zeros(5, 3), neurons=[7])
    with pytest.raises(ValueError, match="sample=4 out of range"):
        plot.raster(torch.zeros(5, 2, 3), sample=4)
