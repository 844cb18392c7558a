"""What the search does with the learning-rate range test: the window, the message, the
epochs it counts (thaw.search._range)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from thaw.objectives import FloatRange, IntRange, SearchSpace
from thaw.search._range import (
    cap_training_rate,
    lr_window,
    narrowed_space,
    range_test_epochs,
    range_test_message,
    range_test_rates,
)

CONFIGURED = FloatRange(1e-5, 1e-1, log=True)

# (id, suggested rates, expected window)
WINDOWS = [
    ("one rate: 30x either side", [1e-3], (1e-3 / 30, 3e-2)),
    ("several: below the lowest, above the highest", [1e-3, 2e-3], (1e-3 / 30, 6e-2)),
    ("clipped by the configured range", [1e-2], (1e-2 / 30, 1e-1)),
    ("the whole configured range: no window", [1e-4, 4e-3], None),
    ("no rate: the configured range", [], None),
    ("outside the configured range: no window", [10.0], None),
]


@pytest.mark.parametrize(("rates", "expected"), [pytest.param(*r[1:], id=r[0]) for r in WINDOWS])
def test_lr_window(rates: list[float], expected: tuple[float, float] | None) -> None:
    window = lr_window(rates, CONFIGURED)
    if expected is None:
        assert window is None
    else:
        assert window is not None
        assert all(math.isclose(a, b) for a, b in zip(window, expected, strict=True))


def summary(suggestions: dict[str, float | None], window: Any = None) -> dict[str, Any]:
    return {
        "modes": {m: {"suggestion": s, "epochs": 1.5} for m, s in suggestions.items()},
        "epochs": 1.5 * len(suggestions),
        "window": window,
    }


def test_rates_and_epochs_from_the_stored_summary() -> None:
    stored = summary({"frozen": 4e-4, "adapt": None, "train": 1.5e-3})
    assert range_test_rates(stored) == {"frozen": 4e-4, "train": 1.5e-3}
    assert range_test_epochs(stored) == 5  # 4.5 epochs, rounded up as the budget counts them
    assert range_test_rates(None) == {} and range_test_epochs(None) == 0


def test_the_sampler_searches_the_stored_window() -> None:
    space = SearchSpace(
        IntRange(0, 5), CONFIGURED, FloatRange(0.0, 0.5), FloatRange(1e-6, 1e-1, log=True)
    )
    narrowed = narrowed_space(space, summary({"train": 1e-3}, [3e-5, 3e-2]))
    assert (narrowed.learning_rate.low, narrowed.learning_rate.high) == (3e-5, 3e-2)
    assert narrowed.learning_rate.log is True
    assert narrowed_space(space, summary({"train": None})) == space
    assert narrowed_space(space, None) == space


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(
            summary({"frozen": None, "adapt": None}),
            "The learning-rate range test diverged at every rate (frozen, adapt); searching the "
            "configured range 1e-05 to 0.1.",
            id="diverged at every rate: one line, the configured range",
        ),
        pytest.param(
            summary({"frozen": 4.49e-4, "adapt": None}, [1.5e-5, 1.35e-2]),
            "Learning-rate range test (3 epochs): suggested rates frozen 0.00045, adapt none; "
            "searching 1.5e-05 to 0.013.",
            id="found rates: what and where",
        ),
    ],
)
def test_range_test_message(stored: dict[str, Any], expected: str) -> None:
    line = range_test_message(stored, CONFIGURED)
    assert line == expected
    assert "\n" not in line


# (id, suggestions per mode, the train suggestion after the cap, whether it was changed)
CAPS = [
    ("above the frozen rate: capped", {"frozen": 1e-3, "train": 7e-3}, 1e-3, True),
    (
        "capped at the higher of frozen and adapt",
        {"frozen": 2e-4, "adapt": 5e-4, "train": 5e-3},
        5e-4,
        True,
    ),
    ("below the fixed-statistics rates: kept", {"frozen": 1e-3, "train": 3e-4}, 3e-4, False),
    ("equal: kept", {"adapt": 1e-3, "train": 1e-3}, 1e-3, False),
    (
        "no fixed-statistics rate: dropped",
        {"frozen": None, "adapt": None, "train": 0.1},
        None,
        True,
    ),
    ("train only: dropped", {"train": 6e-3}, None, True),
    ("train found nothing: nothing to cap", {"frozen": 1e-3, "train": None}, None, False),
]


@pytest.mark.parametrize(
    ("suggestions", "expected", "changed"), [pytest.param(*c[1:], id=c[0]) for c in CAPS]
)
def test_the_batchnorm_train_rate_is_capped_by_fixed_statistics(
    suggestions: dict[str, float | None], expected: float | None, changed: bool
) -> None:
    stored = summary(suggestions)
    for result in stored["modes"].values():
        result["reason"] = "a tenth of something"
    before = {m: dict(r) for m, r in stored["modes"].items()}
    cap_training_rate(stored["modes"])
    train = stored["modes"].get("train")
    assert train["suggestion"] == expected
    assert ("measured_suggestion" in train) is changed
    if changed:
        assert train["measured_suggestion"] == suggestions["train"]
        assert train["reason"].startswith("a tenth of something; ")
        assert ("capped at" if expected is not None else "not used") in train["reason"]
    else:
        assert train == before["train"]
    # The other modes are untouched, and the rates the search uses follow the cap.
    assert all(stored["modes"][m] == before[m] for m in before if m != "train")
    assert range_test_rates(stored).get("train") == expected
