"""The host profile: cached, measured again when old or stale, peaks the best seen; the roof check."""

from __future__ import annotations

import json
import time

import pytest

from rooftop.analysis import hardware
from rooftop.analysis.roofline import Roofline, Row, above_compute_roof


def fake(peak: float, bw: float, age_s: float = 0.0) -> hardware.HardwareProfile:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - age_s))
    return hardware.HardwareProfile(
        "host",
        {"fp32": peak, "fp16": peak, "int8": 4 * peak},
        bw,
        8,
        1e-6,
        "test",
        "measured",
        details={"measured_at": at, "measurements": 1},
    )


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """measure_host replaced by a counter returning 100 GFLOP/s, 20 GB/s; the cache in tmp_path."""
    monkeypatch.setenv("ROOFTOP_CACHE", str(tmp_path))
    calls = []

    def measure(progress=None):
        calls.append(1)
        return fake(100e9, 20e9)

    monkeypatch.setattr(hardware, "measure_host", measure)
    return calls


def cache(prof: hardware.HardwareProfile) -> None:
    path = hardware.cache_dir() / f"host-{hardware.host_key()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prof.as_dict()))


def test_fresh_profile_is_used_as_cached(measured):
    cache(fake(150e9, 30e9, age_s=3600))
    prof = hardware.host_profile()
    assert not measured and prof.peak("fp32") == 150e9


def test_old_profile_is_measured_again_keeping_the_best_peaks(measured):
    cache(fake(150e9, 10e9, age_s=2 * 86400))
    prof = hardware.host_profile()
    assert len(measured) == 1
    assert prof.peak("fp32") == 150e9 and prof.bandwidth == 20e9  # best of old and new, each figure
    assert prof.details["measurements"] == 2
    assert hardware.profile_age_s(prof) < 60
    assert hardware.host_profile() is not None and len(measured) == 1  # now fresh: cached


def test_stale_profile_is_measured_again(measured):
    cache(fake(50e9, 30e9, age_s=60))
    hardware.mark_stale("an operator measured above the roof")
    hardware.host_profile()
    assert len(measured) == 1


def row(flops: float, measured_s: float) -> Row:
    return Row("n", "Conv", flops, 0.0, 1e6, 1e6, flops / 2e6, "compute", flops / 1e11, "fp32", measured_s)


def test_above_compute_roof_ignores_short_and_memory_side():
    hw = fake(100e9, 20e9)
    rl = Roofline([row(1e9, 5e-3), row(1e9, 20e-3), row(1e6, 1e-6)], 0, 0, 0, 0, 0, 0, 0)
    over = above_compute_roof(rl, hw)
    assert [r.measured_s for r in over] == [5e-3]  # 200 GFLOP/s over a 100 GFLOP/s roof; 1 µs is too short to judge
