"""Progress ETA: deterministic step times in, the estimate must be within 20% of the time that really remains."""

from __future__ import annotations

import itertools
import types
from typing import List

import pytest
import torch

from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.sampling import EtaEstimator, SamplerConfig, sample
from LungDDPMLib.sampling import api as sampling_api


def estimates(durations: List[float], **kwargs: int) -> List[float]:
    """ETA after each step, together with the truth, for steps that take ``durations`` seconds."""
    est = EtaEstimator(len(durations), 100.0, **kwargs)
    now, out = 100.0, []
    for k, d in enumerate(durations, start=1):
        now += d
        out.append(est.update(k, now))
    return out


def true_remaining(durations: List[float]) -> List[float]:
    return [sum(durations[k:]) for k in range(1, len(durations) + 1)]


def relative_errors(durations: List[float], **kwargs: int) -> List[float]:
    pairs = zip(estimates(durations, **kwargs), true_remaining(durations))
    return [abs(e - t) / t for e, t in pairs if t > 0]


@pytest.mark.parametrize("first", [1.0, 5.0, 30.0, 120.0])
def test_slow_first_step_does_not_bias_the_estimate(first) -> None:
    durations = [first] + [1.0] * 19  # e.g. compilation or warm-up in the first step
    errors = relative_errors(durations)
    assert max(errors[2:]) < 0.2  # after step 3 (index 2) within 20%
    assert max(errors[1:]) < 1e-9  # in fact exact from step 2 on, for constant steps


def test_naive_estimate_would_fail_the_same_run() -> None:
    durations = [30.0] + [1.0] * 19
    done, elapsed = 3, 32.0
    naive = elapsed / done * (20 - done)
    assert abs(naive - 17.0) / 17.0 > 5  # why the estimator exists: 181 s promised, 17 s left
    assert estimates(durations)[2] == pytest.approx(17.0)


def test_jittery_steps_stay_within_20_percent() -> None:
    jitter = itertools.cycle([0.9, 1.1, 1.0, 0.85, 1.15, 1.05, 0.95])
    durations = [20.0] + [next(jitter) for _ in range(49)]
    assert max(relative_errors(durations)[2:-3]) < 0.2  # the last few steps: tiny remaining times


def test_one_slow_step_in_the_middle_is_ignored() -> None:
    durations = [10.0] + [1.0] * 10 + [15.0] + [1.0] * 18  # a garbage collection or another process
    est = estimates(durations)
    assert est[11] == pytest.approx(18.0)  # right after the slow step the median still says 1 s per step


def test_a_real_change_of_pace_is_followed_within_the_window() -> None:
    durations = [1.0] * 10 + [2.0] * 30  # e.g. another job started on the machine
    errors = relative_errors(durations, window=10)
    assert max(errors[20:-1]) < 0.2


def test_jumps_of_several_steps_share_the_time() -> None:
    est = EtaEstimator(10, 0.0)
    est.update(1, 5.0)
    assert est.update(4, 11.0) == pytest.approx(2.0 * 6)  # three steps in 6 s -> 2 s each, 6 left
    assert est.update(10, 30.0) == 0.0


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="bad estimator settings"):
        EtaEstimator(10, 0.0, window=0)


def test_sample_reports_the_estimator_eta(monkeypatch) -> None:
    """sample() with a fake clock: 30 s before the first step finishes, then 1 s per step."""
    ticks = itertools.chain([0.0, 30.0], itertools.count(31.0, 1.0))
    monkeypatch.setattr(sampling_api, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffusionModel(preset("tiny")).eval()
    lay = torch.zeros(16, 16, 16, dtype=torch.long)
    lay[4:12, 4:12, 4:12] = 1
    seen: list = []
    sample(model, lay, torch.zeros(16, 16, 16), sampler=SamplerConfig("ddim", steps=8), callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 9))
    assert seen[0].elapsed_s == 30.0 and seen[2].elapsed_s == 32.0
    assert seen[2].eta_s == pytest.approx(5.0)  # 5 steps of 1 s left, whatever the first step cost
    assert seen[-1].eta_s == 0.0
