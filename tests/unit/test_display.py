"""What the live displays say: rates that never go negative, and the training job's phase in words."""

from __future__ import annotations

import pytest

from isheep.runtime.cli.progress import Rates
from isheep.runtime.core.progress import describe_training


def test_rates_are_per_second_over_the_window():
    rates = Rates(window_s=10.0)
    assert rates.update((0.0, 0.0), now=100.0) == (0.0, 0.0)
    assert rates.update((50.0, 10.0), now=105.0) == (10.0, 2.0)
    # Samples older than the window drop out: the rate follows the recent pace.
    assert rates.update((60.0, 10.0), now=120.0) == pytest.approx((10.0 / 15.0, 0.0))


def test_a_counter_that_starts_again_gives_no_negative_rate():
    # A new round's item counts start from zero: the live line once showed "-4.8 items/s" here.
    rates = Rates(window_s=10.0)
    rates.update((1000.0, 48.0), now=0.0)
    rates.update((1200.0, 96.0), now=5.0)
    assert rates.update((1250.0, 0.0), now=6.0) == (0.0, 0.0)  # the window restarts at the drop
    assert rates.update((1300.0, 4.0), now=8.0) == (25.0, 2.0)


@pytest.mark.parametrize("progress, said", [
    ({}, "starting the training job"),
    ({"phase": "starting", "examples": 12}, "starting the training job"),
    ({"phase": "loading"}, "loading the model"),
    ({"phase": "tokenizing", "examples": 12}, "tokenizing 12 pairs"),
    ({"phase": "training", "max_steps": 6}, "step 0/6"),
    ({"phase": "training", "step": 3, "max_steps": 6, "loss": 1.23456}, "step 3/6, loss 1.235"),
    ({"phase": "training", "step": 2, "loss": None}, "step 2/?"),
    ({"phase": "saving", "step": 6, "max_steps": 6}, "saving the model"),
    ({"phase": "merging"}, "merging the LoRA adapter into the model"),
])
def test_the_training_job_says_what_it_is_doing(progress, said):
    assert describe_training(progress) == said
