"""The table of a run's versions: differences are to the base (v0) and to the version before."""

from __future__ import annotations

import pytest

from isheep.runtime.evals import mean_interval
from isheep.runtime.pipeline.benchmarking import compare


def _stored(scores: list[float]) -> dict:
    keyed = {str(i): s for i, s in enumerate(scores)}
    return {"scores": keyed, "interval": mean_interval(scores).as_dict(), "metrics": {}}


def test_differences_are_to_v0_and_to_the_version_before_among_those_shown():
    results = {"v0": {"instructions": _stored([0, 0, 1, 1])}, "v1": {"instructions": _stored([1, 0, 1, 1])},
               "v2": {"instructions": _stored([1, 1, 1, 1])}, "v3": {"instructions": _stored([0, 0, 0, 1])}}
    rows = {r.version: r for r in compare(results, ["v0", "v2", "v3"])}
    assert rows["v0"].vs_base is None and rows["v0"].vs_previous is None
    assert rows["v2"].vs_base.mean == pytest.approx(0.5) and rows["v2"].vs_previous is None  # previous is the base
    assert rows["v3"].vs_base.mean == pytest.approx(-0.25) and rows["v3"].vs_previous.mean == pytest.approx(-0.75)
    # Without v0 among the versions shown, the base is still v0, and the first shown has a previous of none.
    rows = {r.version: r for r in compare(results, ["v2", "v3"])}
    assert rows["v2"].vs_base.mean == pytest.approx(0.5) and rows["v2"].vs_previous is None
    assert rows["v3"].vs_previous.mean == pytest.approx(-0.75)
    # A run whose base was never measured: no difference to it.
    del results["v0"]
    assert all(r.vs_base is None for r in compare(results, ["v1", "v2"]))
