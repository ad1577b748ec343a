"""numba kernel of the hair-cell + bushy-cell stages of :mod:`spiking.datasets.audio_cochlea`.

The equations, their order and their sources are stated in that module's docstring (steps 3-4);
this file only runs them: one thread per channel (``prange``), one loop over samples, spikes
written into a boolean ``[C, T]`` array. Imported lazily (``import spiking`` needs no numba).
"""

import math

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def uniform(seed, ch, n):
    z = (seed * np.uint64(0x9E3779B97F4A7C15) + np.uint64(ch) * np.uint64(0xD1B54A32D192ED03)
         + np.uint64(n) * np.uint64(0x8CB92BA72F3D8DD7))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)

@numba.njit(cache=True, parallel=True)
def hair_bushy(bm, ch0, fs2, seed, ihc, bushy, out):
    y, g, l, r, x, a, b, h, m = ihc
    n_f, tau_mem, tau_syn, tau_ref, weight = bushy
    dt = 1.0 / fs2
    kt0 = g * a / (a + b)
    c_rest = m * y * kt0 / (l * kt0 + y * (l + r))
    ref_n = round(tau_ref * fs2)   # fibre dead time in samples
    n_refr = tau_ref * fs2              # LIF refractory counter start
    e_mem, e_syn = math.exp(-dt / tau_mem), math.exp(-dt / tau_syn)
    w_dt = weight / n_f * dt
    nfib = int(n_f)
    for i in numba.prange(bm.shape[0]):
        q, c, w = c_rest * (l + r) / kt0, c_rest, c_rest * r / x
        hist = np.zeros(ref_n, np.int64)  # fibres that spiked in the last ref_n samples
        busy = 0
        cur, v, v_prev, refr = 0.0, 0.0, 0.0, 0.0
        for n in range(bm.shape[1]):
            u = bm[i, n]
            k = g * dt * (u + a) / (u + a + b) if u + a > 0 else 0.0
            rep = y * dt * (m - q) if q < m else 0.0
            ej = k * q
            q_new = max(q + rep - ej + x * dt * w, 0.0)
            c_new = max(c + ej - (l + r) * dt * c, 0.0)
            w = max(w + r * dt * c - x * dt * w, 0.0)
            q, c = q_new, c_new
            p = min(max(h * dt * c, 0.0), 1.0)
            # Binomial(avail, p) by inversion from one uniform
            slot = n % ref_n
            busy -= hist[slot]
            avail = nfib - busy
            fired = 0
            if p > 0.0 and avail > 0:
                uu = uniform(seed, ch0 + i, n)
                if p >= 1.0:
                    fired = avail
                else:
                    pk = (1.0 - p) ** avail
                    cdf = pk
                    ratio = p / (1.0 - p)
                    while uu > cdf and fired < avail:
                        pk *= (avail - fired) / (fired + 1.0) * ratio
                        fired += 1
                        cdf += pk
            hist[slot] = fired
            busy += fired
            # bushy-cell LIF (lauscher's update order)
            if n > 0:
                if refr <= 0:
                    if v_prev < 1.0:
                        v = v_prev * e_mem
                    else:
                        refr = n_refr
                        v = 0.0
                        out[i, n - 1] = True
                else:
                    v = 0.0
                cur *= e_syn
            cur += fired
            if refr <= 0:
                v += cur * w_dt
            v = min(v, 1.0)
            refr -= 1
            v_prev = v


@numba.njit(cache=True, parallel=True)
def filter_spectrum(logmag, phase, pos, spec, out):
    """``out[c, j] = exp(interp(logmag[c], pos[j]) + i interp(phase[c], pos[j])) * spec[j]``.

    ``pos`` holds fractional indices into the table's uniform frequency grid (linear
    interpolation of log magnitude and unwrapped phase, see ``audio_cochlea`` step 2).
    """
    for c in numba.prange(out.shape[0]):
        for j in range(out.shape[1]):
            i0 = int(pos[j])
            wt = pos[j] - i0
            lm = logmag[c, i0] * (1.0 - wt) + logmag[c, i0 + 1] * wt
            ph = phase[c, i0] * (1.0 - wt) + phase[c, i0 + 1] * wt
            amp = math.exp(lm)
            out[c, j] = complex(amp * math.cos(ph), amp * math.sin(ph)) * spec[j]
