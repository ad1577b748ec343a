"""Cochlea model that turns audio into 700 channels of spikes, as used to build SHD.

Cramer, Stradmann, Schemmel, Zenke (2020), "The Heidelberg Spiking Data Sets for the Systematic
Evaluation of Spiking Neural Networks", IEEE TNNLS 33(7):2744, Sec. III-B, converted audio with
a hydrodynamic basilar-membrane model, Meddis inner hair cells and bushy cells, released as the
``lauscher`` package (1.0.1, LGPL-2.1). This module re-implements that chain, vectorised, with
the same equations and constants (read from the papers and checked against lauscher's output,
see ``tests/datasets/test_audio.py``). Sample rate ``fs`` is the audio rate (48 kHz for SHD).

1. **Input**: ``x <- 0.3 * x / rms(x)``, then a Hanning ramp over each half of the clip
   (``np.hanning(2 * (N // 2))``, rising on the first ``N // 2`` samples, falling on the last).
2. **Basilar membrane** (Sieroka, Dosch, Rupp 2006, JASA 120(1):297, "Semirealistic models of the
   cochlea"): channel ``k`` sits at place ``c_k = linspace(0, 3.5, 700)[k]`` (cm from the base).
   With stiffness ``s(c) = c0 exp(-alpha c) - a``, damping ``r(c) = r0 exp(-alpha c / 2)``,
   ``r0 = de sqrt(c0 m)``, ``xi = s - m w^2 - i w r``, ``g = w sqrt(rho / (h xi))``,
   ``q = sqrt(a + m w^2)``, ``F(c) = -sqrt(xi(c)) + i (2 q^2 + i w r(c)) / (2 q)``,
   ``G = 2 g(w, 0) / alpha - 2 i w / (alpha sqrt(h) q) * log(exp(-alpha c / 2) F(0) / F(c))``,
   ``P(w, c) = sqrt(G / g(w, c)) H0^(1)(G)`` and the stapes impedance
   ``Z(w) = sqrt(2 c0 / h) (i J0(k) + Y0(k)) / (J1(k) - i Y1(k))``, ``k = 2 w / alpha *
   sqrt(2 / (h c0))``, the membrane velocity's transfer function is
   ``V(w, c) = 2 w / xi(w, c) * P(w, c) Z(w) / P(w, 0)``. The response of channel ``k`` is
   ``Re(ifft(V(w_j, c_k) X_j))`` over the ``M = N // 2 + 1`` non-negative FFT bins ``X_j`` of
   the clip, with ``w_j = 2 pi linspace(1, fs / 2, M)[j]`` and output rate ``fs // 2``
   (lauscher's discretisation, kept so that spike statistics match its files).
   Evaluating the Hankel function is the expensive part, so ``V`` is tabulated once on a fixed
   grid of ``TABLE_POINTS`` frequencies (cached on disk) and interpolated linearly in log
   magnitude and unwrapped phase (relative error of the filtered energy ~2e-3; ``exact=True``
   evaluates it directly).
3. **Inner hair cell** (Meddis 1986, JASA 79(3):702; Meddis 1988, JASA 83(3):1056), per sample
   at rate ``fs2 = fs // 2`` with membrane velocity ``u``: ``k = g dt (u + A) / (u + A + B)`` if
   ``u + A > 0`` else 0; ``rep = y dt (M - q)`` if ``q < M`` else 0; ``ej = k q``;
   ``q' = max(q + rep - ej + x dt w, 0)``, ``c' = max(c + ej - (l + r) dt c, 0)``,
   ``w' = max(w + r dt c - x dt w, 0)`` (all from the old values), and the release probability
   per sample is ``h dt c'``. Start at the resting state of ``u = 0``.
4. **Bushy cell** (Cramer et al. 2020, Sec. III-B; Rothman & Manis 2003 for the cell type): 40
   auditory-nerve fibres per channel fire independently with that probability, each blind for
   ``tau_ref = 1 ms`` (``round(fs2 tau_ref)`` samples after a spike, the spike sample included),
   so the number of fibres spiking at sample ``n`` is ``Binomial(40 - busy_n, p_n)`` (exactly
   the distribution of lauscher's 40 Bernoulli draws with dead time). A current-based LIF sums
   them: ``I_n = I_{n-1} exp(-dt / tau_syn) + k_n``; when not refractory,
   ``v_n = v_{n-1} exp(-dt / tau_mem) + w dt I_n`` clipped at 1, ``w = 13e3 / 40``; if
   ``v_{n-1} >= 1`` a spike is emitted at sample ``n - 1`` and ``v`` is held at 0 for
   ``fs2 tau_ref`` samples. Spike times are ``sample / fs2`` seconds.

Randomness comes from a counter-based hash (splitmix64 of seed, channel and sample), so the
result depends only on ``seed`` and is the same however channels are split across threads.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Basilar-membrane constants (Sieroka et al. 2006 via lauscher ``BasilarMembrane`` defaults),
#: CGS units: a [dyn/cm^3], alpha [1/cm], rho [g/cm^3], c0 [dyn/cm^3], de, h [cm], m [g/cm^2].
BM = {"a": 3500.0, "alpha": 3.0, "rho": 1.0, "length_cm": 3.5, "c0": 10e8, "de": 0.15, "h": 0.1, "m": 0.05}
#: Meddis (1988) hair-cell constants as used by lauscher ``HairCell`` (rates in 1/s).
IHC = {"y": 5.05, "g": 2000.0, "l": 2500.0, "r": 6580.0, "x": 66.3, "a": 5.0, "b": 300.0, "h": 50000.0, "m": 1.0}
#: Bushy-cell constants (Cramer et al. 2020; lauscher ``BushyCell`` defaults).
BUSHY = {"n_fibres": 40, "tau_mem": 1e-3, "tau_syn": 5e-4, "tau_ref": 1e-3, "weight": 13e3}
#: Input normalisation: RMS level (lauscher ``Wave2Spike``: ``RmsNormalizer(0.3)``).
RMS_LEVEL = 0.3
#: Frequencies in the transfer-function table (1 Hz .. fs/2); 4097 keeps the error ~2e-3.
TABLE_POINTS = 4097


def channel_places(n_channels: int = 700) -> np.ndarray:
    """Place of each channel along the membrane in cm from the base (0 = base = high pitch)."""
    return np.linspace(0.0, BM["length_cm"], n_channels)


def transfer(omega, places) -> np.ndarray:
    """``V(w, c)`` for angular frequencies ``omega`` [F] and places ``places`` [C] -> [C, F]."""
    from scipy import special

    a, al, rho, c0, h, m = (BM[k] for k in ("a", "alpha", "rho", "c0", "h", "m"))
    r0 = BM["de"] * np.sqrt(c0 * m)
    w = np.asarray(omega, dtype=np.float64)[None, :]
    q = np.sqrt(a + m * w**2)

    def xi(c):
        return c0 * np.exp(-al * c) - a - m * w**2 - 1j * w * r0 * np.exp(-al * c / 2)

    def f(c):
        return -np.sqrt(xi(c)) + 1j * (2 * q**2 + 1j * w * r0 * np.exp(-al * c / 2)) / (2 * q)

    def g(c):
        return w * np.sqrt(rho / (h * xi(c)))

    def p(c):
        big_g = 2 * g(0.0) / al - 2j * w / (al * np.sqrt(h) * q) * np.log(
            np.exp(-al * c / 2) * f(0.0) / f(c))
        return np.sqrt(big_g / g(c)) * special.hankel1(0, big_g)

    k = 2 * w / al * np.sqrt(2 / (h * c0))
    z = np.sqrt(2 * c0 / h) * (1j * special.j0(k) + special.y0(k)) / (special.j1(k)
                                                                     - 1j * special.y1(k))
    c = np.asarray(places, dtype=np.float64)[:, None]
    return 2 * w / xi(c) * p(c) * z / p(np.zeros((1, 1)))


def _table_path(n_channels: int, fs2: int) -> Path:
    from spiking.datasets.locate import cache_dir

    key = hashlib.sha256(repr((sorted(BM.items()), n_channels, fs2, TABLE_POINTS, 1)).encode())
    return cache_dir() / "audio" / f"bm_table_{n_channels}_{fs2}_{key.hexdigest()[:12]}.npz"


@lru_cache(maxsize=4)
def transfer_table(n_channels: int = 700, fs2: int = 24000):
    """(grid Hz, log|V| [C, P], unwrapped phase [C, P]) on ``TABLE_POINTS`` frequencies.

    Computed once (~10 s for 700 channels) and cached in the user cache; a damaged cache file
    is recomputed.
    """
    path = _table_path(n_channels, fs2)
    grid = np.linspace(1.0, fs2, TABLE_POINTS)
    try:
        with np.load(path) as z:
            mag, ph = z["logmag"], z["phase"]
        if mag.shape == ph.shape == (n_channels, TABLE_POINTS) and np.isfinite(mag).all():
            return grid, mag, ph
    except (OSError, ValueError, KeyError):
        pass
    v = transfer(2 * np.pi * grid, channel_places(n_channels))
    mag = np.log(np.abs(v) + 1e-300).astype(np.float32)
    ph = np.unwrap(np.angle(v), axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{np.random.randint(1 << 30)}.npz")
    np.savez(tmp, logmag=mag, phase=ph)
    tmp.replace(path)
    return grid, mag, ph


def _filtered(spec, freqs, n_channels, fs2, rows, exact):
    """``V(w_j, c_k) X_j`` for the channels ``rows`` (complex64 ``[C, M]``)."""
    if exact:
        v = transfer(2 * np.pi * freqs, channel_places(n_channels)[rows]) * spec[None, :]
        return v.astype(np.complex64)
    from spiking.datasets.audio_numba import filter_spectrum

    grid, mag, ph = transfer_table(n_channels, fs2)
    pos = np.clip((freqs - grid[0]) / (grid[1] - grid[0]), 0, TABLE_POINTS - 1 - 1e-9)
    out = np.empty((rows.stop - rows.start, freqs.size), np.complex64)
    filter_spectrum(mag[rows], ph[rows], pos, spec, out)
    return out


def prepare(x) -> np.ndarray:
    """RMS normalisation to ``RMS_LEVEL`` and the half-clip Hanning ramps (step 1)."""
    x = np.asarray(x, dtype=np.float64).copy()
    if x.ndim != 1 or x.size < 4:
        raise ValueError(f"audio must be a 1-D array of at least 4 samples, got shape {x.shape}")
    rms = np.sqrt(np.mean(x**2))
    if not rms > 0:
        raise ValueError("audio is silent (RMS 0): nothing to convert")
    x *= RMS_LEVEL / rms
    half = x.size // 2
    ramp = np.hanning(2 * half)[:half]
    x[:half] *= ramp
    x[x.size - half:] *= ramp[::-1]
    return x


def cochlea(x, fs: int, n_channels: int = 700, seed: int = 0, exact: bool = False,
            fast_fft: bool = True, chunk: int = 100):
    """Spikes of ``n_channels`` bushy cells for mono audio ``x`` at ``fs`` Hz.

    ``fast_fft`` zero-pads the windowed clip so that the ``M``-point inverse FFTs have a fast
    length (less circular wrap-around of the filters' ringing, same duration and output rate;
    ``False`` keeps lauscher's exact length). ``exact`` evaluates the transfer function instead
    of interpolating its table.

    Returns ``(times_s float64, units int64)`` sorted by time, then channel (like lauscher).
    """
    if fs < 8000 or int(fs) != fs:
        raise ValueError(f"fs must be an integer sample rate >= 8000 Hz, got {fs}")
    from scipy import fft as sfft

    from spiking.datasets.audio_numba import hair_bushy
    from spiking.kernels.cpu import match_torch_threads

    # numba's parallel loops below on torch's thread count; the first one launches numba's
    # OpenMP pool, which would otherwise leave torch (sharing the runtime) on every core
    match_torch_threads()
    xs = prepare(x)
    n_bins = xs.size // 2 + 1
    fs2 = int(fs) // 2
    n_fft = sfft.next_fast_len(n_bins) if fast_fft else n_bins
    if n_fft > n_bins:  # zero-pad so the FFT length is fast; spikes past the clip are dropped
        xs = np.concatenate([xs, np.zeros(2 * (n_fft - 1) - xs.size)])
    spec = np.fft.rfft(xs)
    freqs = np.linspace(1, fs2, spec.size)
    ihc = np.array([IHC[k] for k in "yglrxabhm"], dtype=np.float64)
    bushy = np.array([BUSHY[k] for k in ("n_fibres", "tau_mem", "tau_syn", "tau_ref", "weight")])
    seed_u = np.uint64(seed % (1 << 64))
    times, units = [], []
    for c0 in range(0, n_channels, chunk):
        rows = slice(c0, min(c0 + chunk, n_channels))
        filt = _filtered(spec, freqs, n_channels, fs2, rows, exact)
        bm = np.ascontiguousarray(
            sfft.ifft(filt, axis=1, workers=-1, overwrite_x=True).real[:, :n_bins])
        out = np.zeros(bm.shape, dtype=np.bool_)
        hair_bushy(bm, c0, float(fs2), seed_u, ihc, bushy, out)
        ci, ni = np.nonzero(out)
        times.append(ni)
        units.append(ci + c0)
    ni, ci = np.concatenate(times), np.concatenate(units)
    order = np.lexsort((ci, ni))
    return ni[order] / fs2, ci[order]
