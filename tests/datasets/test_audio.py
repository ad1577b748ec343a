"""Audio -> SHD-format spikes: filter bank, tone response, file layout, closeness to lauscher."""

import os
from pathlib import Path

import numpy as np
import pytest

from spiking.datasets import audio
from spiking.datasets import audio_cochlea as ac

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
REF = DATA / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
FSDD = DATA / "fsdd" / "recordings"
needs_ref = pytest.mark.skipif(not (REF.is_file() and FSDD.is_dir()),
                               reason=f"reference data absent ({REF}, {FSDD}); set SPIKING_DATA")


def _cf(places):
    f = np.linspace(20, 24000, 4000)
    return f[np.abs(ac.transfer(2 * np.pi * f, places)).argmax(1)]


def test_centre_frequencies_monotonic_and_span_documented_range():
    places = ac.channel_places(700)
    assert np.all(np.diff(places) > 0) and places[0] == 0 and places[-1] == 3.5
    cf = _cf(places[::10])
    assert np.all(np.diff(cf) <= 0)               # base = high pitch, apex = low pitch
    assert cf[0] > 15000 and cf[-1] < 200          # ~22.5 kHz .. ~100 Hz at fs = 48 kHz


def test_transfer_matches_lauscher_equations():
    lauscher_bm = pytest.importorskip("lauscher.transformations.basilar_membrane")
    bm = lauscher_bm.BasilarMembrane(channels=700)
    om = 2 * np.pi * np.linspace(1, 24000, 301)
    places = ac.channel_places(700)[::70]
    ref = np.array([bm._v(om, c) for c in places])
    np.testing.assert_allclose(ac.transfer(om, places), ref, rtol=1e-9, atol=0)


def test_table_interpolation_close_to_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4801)
    xs = ac.prepare(x)
    spec = np.fft.rfft(xs)
    freqs = np.linspace(1, 24000, spec.size)
    rows = slice(0, 700, 7)
    a = ac._filtered(spec, freqs, 700, 24000, rows, exact=True)
    grid, mag, ph = ac.transfer_table(700, 24000)
    b = np.empty_like(a)
    from spiking.datasets.audio_numba import filter_spectrum

    pos = (freqs - grid[0]) / (grid[1] - grid[0])
    filter_spectrum(mag[rows], ph[rows], pos, spec, b)
    err = np.sqrt((np.abs(a - b) ** 2).sum() / (np.abs(a) ** 2).sum())
    assert err < 1e-2


@pytest.mark.parametrize("tone_hz", [500.0, 2000.0])
def test_pure_tone_excites_channels_around_its_frequency(tone_hz):
    fs = 48000
    t = np.arange(int(0.25 * fs)) / fs
    times, units = ac.cochlea(np.sin(2 * np.pi * tone_hz * t), fs, seed=0)
    counts = np.bincount(units, minlength=700)
    smooth = np.convolve(counts, np.ones(15) / 15, mode="same")
    peak = int(smooth.argmax())
    cf = _cf(ac.channel_places(700)[[peak]])[0]
    assert tone_hz / 1.6 < cf < tone_hz * 1.6
    # channels far from the tone stay near spontaneous activity
    far = counts[:100] if tone_hz < 1000 else counts[-100:]
    assert far.mean() < 0.2 * smooth.max()


def test_deterministic_given_seed():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(9600)
    a, b, c = (ac.cochlea(x, 48000, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (len(a[0]) == len(c[0]) and np.array_equal(a[1], c[1]))
    assert np.all(np.diff(a[0]) >= 0) and a[1].max() < 700


@needs_ref
def test_written_file_matches_reference_structure(tmp_path):
    h5py = pytest.importorskip("h5py")
    out = audio.build_fsdd_shd(src=FSDD.parent, out=tmp_path, limit=2, progress=False)
    with h5py.File(REF) as r, h5py.File(out / "SHD" / "shd_test.h5") as o:
        def layout(f):
            items = {}
            f.visititems(lambda n, d: items.__setitem__(
                n, None if isinstance(d, h5py.Group) else
                (d.dtype.kind, str(h5py.check_vlen_dtype(d.dtype)), d.ndim)))
            return items
        lr, lo = layout(r), layout(o)
        assert lr.keys() == lo.keys()
        for k in lr:
            if lr[k] is not None and lr[k][0] != "S":   # byte strings differ only in width
                assert lr[k] == lo[k], k
        assert o["spikes/times"].dtype.metadata["vlen"] == np.float16
        assert o["spikes/units"].dtype.metadata["vlen"] == np.uint16
        assert list(o["extra/keys"][:]) == list(r["extra/keys"][:])
        assert "description" in o.attrs
    from spiking.datasets import SHD

    ds = SHD(root=out, train=False)
    assert len(ds) == 2 and ds[0][1] == 0


@needs_ref
@pytest.mark.slow
def test_close_to_lauscher_reference_conversions():
    """Six real clips (one per speaker) against the lauscher conversions of the same audio.

    The model is stochastic (40 random fibres per channel), so the bar is the model's own
    seed-to-seed spread, measured on these clips: count ratio 0.994, per-channel count
    correlation 0.988, 20-channel-band correlation 0.9996, mean spike-time shift 1.0 ms.
    Ours vs lauscher measured 0.997 / 0.988 / 0.9993 / 1.0 ms. The thresholds below allow about
    twice the seed-to-seed deviation.
    """
    h5py = pytest.importorskip("h5py")
    with h5py.File(REF) as f:
        idx = list(range(0, 60, 10))
        names = [f["extra/source_file"][i].decode() for i in idx]
        ref = [(f["spikes/times"][i], f["spikes/units"][i]) for i in idx]
    ours = [audio.file_to_spikes(FSDD / n, seed=0) for n in names]
    c = audio.closeness(ours, ref)
    assert 0.95 < c["count_ratio"] < 1.05, c
    assert c["channel_corr"] > 0.97, c
    assert c["band_corr"] > 0.998, c
    assert c["mean_time_diff_s"] < 0.003, c
    for (t, _), (r, _) in zip(ours, ref):
        assert 0.85 < len(t) / len(r) < 1.15


def test_build_refuses_an_unwritable_folder_before_converting(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"                  # a file where the folder would go (root
    blocker.write_text("x")                        # ignores permission bits, not this)
    monkeypatch.setattr(audio, "fsdd_files", lambda src: pytest.fail("converted first"))
    with pytest.raises(PermissionError, match=r"cannot write the converted .*a-file.SHD"):
        audio.build_fsdd_shd(src=tmp_path, out=blocker, progress=False)


def test_one_thread_job_converts_on_one_thread_and_stays_there(one_thread_counts):
    """The cochlea's numba loops launch numba's OpenMP pool; in a fresh OMP_NUM_THREADS=1
    process torch (and numba) must keep one thread afterwards (it used to be every core, so
    a training that converted FSDD first then ran its matmuls on every core)."""
    code = ("import numpy as np, torch, numba\n"
            "from spiking.datasets import audio_cochlea as ac\n"
            "ac.cochlea(np.random.default_rng(0).standard_normal(4800), 48000, n_channels=20)\n"
            "print(torch.get_num_threads(), numba.get_num_threads())\n")
    assert one_thread_counts(code) == ["1", "1"]
