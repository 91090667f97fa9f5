"""The export's parity verdict (training.export.parity_check): TFLite passes when both its AP and AP50
are within ``max_delta`` of the SavedModel's, in either direction, and fails when either is not."""

from __future__ import annotations

import pytest

from training.export import DEFAULT_MAX_DELTA, parity_check

EPS = 1e-6
SAVED = {"AP": 0.40, "AP50": 0.70}


def _tflite(key: str, delta: float) -> dict:
    out = dict(SAVED)
    out[key] = SAVED[key] + delta
    return out


@pytest.mark.parametrize("key", ["AP", "AP50"])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("max_delta", [DEFAULT_MAX_DELTA, 0.05])
def test_a_delta_just_over_the_bound_fails_and_just_under_passes(key, sign, max_delta):
    over = parity_check(SAVED, _tflite(key, sign * (max_delta + EPS)), max_delta)
    under = parity_check(SAVED, _tflite(key, sign * (max_delta - EPS)), max_delta)
    assert over["passed"] is False
    assert under["passed"] is True
    assert over[f"delta_{key}"] == pytest.approx(sign * (max_delta + EPS), abs=1e-12)
    other = "AP50" if key == "AP" else "AP"
    assert over[f"delta_{other}"] == 0.0 and under[f"delta_{other}"] == 0.0


def test_the_report_gives_both_figures_and_the_signed_delta():
    out = parity_check({"AP": 0.5, "AP50": 0.8}, {"AP": 0.49, "AP50": 0.81})
    assert out["AP_savedmodel"] == 0.5 and out["AP_tflite"] == 0.49
    assert out["AP50_savedmodel"] == 0.8 and out["AP50_tflite"] == 0.81
    assert out["delta_AP"] == pytest.approx(-0.01) and out["delta_AP50"] == pytest.approx(0.01)
