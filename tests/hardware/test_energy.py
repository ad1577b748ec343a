"""Energy: arithmetic on hand counts, profile loading and its errors."""

import pytest

from spiking.hardware import energy as E


def _write(tmp_path, text, name="dev.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """
name = "toy"
source = "made up for a test"
event_driven = true
[values]
e_mac_pj = 4.0
e_ac_nj = 0.001
e_neuron_update_pj = 2.0
e_spike_fj = 500.0
p_static_mw = 10.0
t_step_ms = 2.0
[sources]
e_mac_pj = "table 1"
"""

COUNTS = {"effective_macs": 10.0, "effective_acs": 100.0, "dense": 1000.0,
          "membrane_updates_dense": 50.0, "spikes": 4.0, "steps": 3}


def test_arithmetic_with_unit_conversion(tmp_path):
    prof = E.load_profile(_write(tmp_path, GOOD))
    est = E.estimate(COUNTS, prof)
    by = {t.name: t for t in est.terms}
    assert by["synaptic ops (MACs)"].energy_j == pytest.approx(10 * 4.0e-12)
    assert by["synaptic ops (ACs)"].energy_j == pytest.approx(100 * 1.0e-12)   # 0.001 nJ
    assert by["neuron updates"].energy_j == pytest.approx(50 * 2.0e-12)
    assert by["spikes"].energy_j == pytest.approx(4 * 0.5e-12)                 # 500 fJ
    assert est.duration_s == pytest.approx(3 * 2e-3)
    assert est.static_j == pytest.approx(10e-3 * 6e-3)
    assert est.total_j == pytest.approx((40 + 100 + 100 + 2) * 1e-12 + 6e-5)
    assert by["synaptic ops (MACs)"].source == "table 1"
    assert by["spikes"].source == "made up for a test"
    md = est.to_markdown()
    assert "estimate" in md.lower() and "100" in md


def test_dense_device_prices_dense_ops(tmp_path):
    prof = E.load_profile(_write(tmp_path, GOOD.replace("event_driven = true",
                                                       "event_driven = false")))
    est = E.estimate(COUNTS, prof)
    assert est.terms[0].name == "synaptic ops (dense MACs)"
    assert est.terms[0].energy_j == pytest.approx(1000 * 4e-12)


def test_synop_prices_macs_and_acs(tmp_path):
    text = 'source = "s"\n[values]\ne_synop_pj = 2.0\n'
    est = E.estimate(COUNTS, E.load_profile(_write(tmp_path, text)))
    assert est.total_j == pytest.approx((10 + 100) * 2e-12)


def test_missing_source_is_an_error_naming_the_file(tmp_path):
    p = _write(tmp_path, "[values]\ne_mac_pj = 1.0\n", "nosrc.toml")
    with pytest.raises(ValueError, match=r"nosrc\.toml.*source"):
        E.load_profile(p)


def test_key_without_unit_is_an_error_naming_file_and_key(tmp_path):
    p = _write(tmp_path, 'source = "s"\n[values]\ne_mac = 1.0\n', "nounit.toml")
    with pytest.raises(ValueError, match=r"nounit\.toml.*'e_mac'.*unit"):
        E.load_profile(p)


def test_wrong_unit_kind_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="'e_mac_mw' is an energy"):
        E.load_profile(_write(tmp_path, 'source = "s"\n[values]\ne_mac_mw = 1.0\n'))
    with pytest.raises(ValueError, match="'e_mac_pj' must be >= 0"):
        E.load_profile(_write(tmp_path, 'source = "s"\n[values]\ne_mac_pj = -1.0\n'))
    with pytest.raises(ValueError, match="not valid TOML"):
        E.load_profile(_write(tmp_path, 'source = "s"\n[values\n'))
    with pytest.raises(FileNotFoundError):
        E.load_profile(tmp_path / "absent.toml")
    with pytest.raises(ValueError, match="unknown device profile"):
        E.load_profile("no-such-device")


@pytest.mark.parametrize("name", E.available_profiles())
def test_packaged_profiles_load_and_cite_every_value(name):
    prof = E.load_profile(name)
    assert prof.source and prof.energies_pj
    for key in prof.values:
        assert key in prof.sources, f"{name}: {key} has no per-key source line"


def test_packaged_set_is_complete():
    assert {"cmos45nm", "loihi", "spinnaker1", "spinnaker2", "truenorth", "gpu_a100",
            "rram"} <= set(E.available_profiles())


def test_horowitz_figures():
    prof = E.load_profile("cmos45nm")
    assert prof.energies_pj["e_mac"] == 4.6 and prof.energies_pj["e_ac"] == 0.9
