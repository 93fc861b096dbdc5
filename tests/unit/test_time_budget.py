"""A run's time budget and its rounds' tails, on a clock the tests move by hand.

Every second is credited to the innermost open phase or to idle, so the parts add up to the
wall time exactly; the saturation share covers generation seconds only, and reads unknown (not
0%) without metrics; the account notes the moment proposing ended once, and counts the answers
generated past the quota as each mode defines them; the summary, the stored sessions and the
monitor all read the same plain data.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from support.runs import make_finished_run

from isheep.runtime.cli.summary import summary_table
from isheep.runtime.core.messages import Verdict
from isheep.runtime.core.progress import add_budgets, describe_budget
from isheep.runtime.pipeline import RoundSummary, RunResult, RunStats
from isheep.runtime.pipeline.account import RoundAccount
from isheep.runtime.pipeline.budget import PHASES, TimeBudget
from isheep.runtime.pipeline.tracking import round_metrics
from isheep.runtime.store import RunStore
from isheep.tui.source import RunReader


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def parts(budget: dict) -> float:
    return sum(budget[f"{name}_s"] for name in PHASES) + budget["idle_s"]


def test_nested_phases_credit_the_innermost_and_the_parts_add_up_to_the_wall():
    clock = Clock()
    budget = TimeBudget(clock=clock)
    clock.wait(1)  # before any phase: idle
    with budget.phase("startup"):
        clock.wait(2)
        with budget.phase("server_start"):
            clock.wait(30)
        clock.wait(0.5)
    with budget.phase("generation"):
        clock.wait(10)
        assert budget.switch("generation", "round_tail")
        clock.wait(4)
    clock.wait(0.25)
    with budget.phase("training"):
        clock.wait(1)
        with budget.phase("evaluation"):
            clock.wait(3)
        clock.wait(20)
    with budget.phase("swap"):
        clock.wait(5)
    with budget.phase("shutdown"):
        clock.wait(2)
    budget.close()
    clock.wait(100)  # a closed budget's clock stands still
    d = budget.to_dict()
    assert (d["startup_s"], d["server_start_s"], d["generation_s"], d["round_tail_s"]) == (2.5, 30, 10, 4)
    assert (d["training_s"], d["evaluation_s"], d["swap_s"], d["shutdown_s"]) == (21, 3, 5, 2)
    assert d["idle_s"] == pytest.approx(1.25) and d["wall_s"] == pytest.approx(78.75)
    assert parts(d) == pytest.approx(d["wall_s"], abs=1e-9)


def test_the_real_clock_adds_up_too_and_a_phase_left_by_an_error_ends():
    budget = TimeBudget()
    with pytest.raises(RuntimeError):
        with budget.phase("training"):
            with budget.phase("evaluation"):
                raise RuntimeError("boom")
    assert budget.current is None
    d = budget.to_dict()
    assert parts(d) == pytest.approx(d["wall_s"], abs=1e-9) and d["idle_s"] >= 0


def test_switch_changes_only_the_phase_it_names_and_unknown_phases_are_refused():
    budget = TimeBudget(clock=Clock())
    assert not budget.switch("generation", "round_tail")  # no phase open
    with budget.phase("training"):
        assert not budget.switch("generation", "round_tail")
        assert budget.current == "training"
    with pytest.raises(ValueError):
        with budget.phase("lunch"):
            pass


def test_saturation_covers_generation_seconds_only_and_is_unknown_without_metrics():
    clock = Clock()
    budget = TimeBudget(clock=clock)
    with budget.phase("training"):
        budget.observe(True)  # a sample taken outside generation says nothing of it
        clock.wait(50)
    with budget.phase("generation"):
        clock.wait(2)  # before the round's first sample: not observed
        budget.observe(True)
        clock.wait(6)
        budget.observe(False)
        clock.wait(2)
        budget.switch("generation", "round_tail")
        clock.wait(7)  # the tail is not generation
        budget.observe(True)
    budget.settle()
    assert budget.observed_s == 8 and budget.saturated_s == 6 and budget.saturated_share == 0.75
    blind = TimeBudget(clock=clock)
    with blind.phase("generation"):
        blind.observe(None)
        clock.wait(10)
        blind.observe(None)
    blind.settle()
    assert blind.saturated_share is None and blind.to_dict()["saturated_share"] is None


def test_settle_gives_a_rounds_last_seconds_the_last_samples_state():
    clock = Clock()
    budget = TimeBudget(clock=clock)
    with budget.phase("generation"):
        budget.observe(True)
        clock.wait(3)
    budget.settle()
    with budget.phase("generation"):
        clock.wait(5)  # the next round: unknown until its own sample
    budget.settle()
    assert (budget.saturated_s, budget.observed_s) == (3, 3)


# -- the account's tail ------------------------------------------------------------------------
def kept(account: RoundAccount, n: int, status: str = "kept") -> None:
    for i in range(n):
        account.record(Verdict(id=f"r01-{i:06d}", round=1, model_version="v0", status=status, stage="curator",
                               reason=None if status == "kept" else "low_quality:3"))


def test_the_moment_the_quota_is_met_is_noted_once_and_later_answers_are_past_it():
    clock = Clock()
    closed: list[float] = []
    account = RoundAccount(round=1, quota=3, cap=100, clock=clock, on_close=lambda: closed.append(clock()))
    account.admitted(5)
    account.answered()
    kept(account, 2)
    assert account.closed_at is None and account.past_quota == 0
    clock.wait(7)
    kept(account, 1)
    assert account.closed_at == 107 and closed == [107]
    account.answered()
    account.answered()
    kept(account, 1)
    assert closed == [107] and account.past_quota == 2 and account.answers == 3


def test_reaching_the_cap_ends_proposing_but_answers_are_not_past_an_unmet_quota():
    account = RoundAccount(round=1, quota=10, cap=4, clock=Clock())
    assert len(account.allocate(6)) == 4
    assert account.closed_at == 100
    account.answered()
    assert account.past_quota == 0


def test_closing_on_instructions_counts_the_answers_beyond_the_quota():
    account = RoundAccount(round=1, quota=2, cap=100, close_on="instructions", clock=Clock())
    account.admitted(4)
    assert account.closed_at is not None  # four screened: the quota of instructions is met
    for _ in range(4):
        account.answered()
    assert account.past_quota == 2


# -- where it is shown --------------------------------------------------------------------------
def sample_budget(**changes: float) -> dict:
    clock = Clock()
    budget = TimeBudget(clock=clock)
    for name, seconds in {"server_start": 31, "generation": 250, "round_tail": 18, "training": 80, "swap": 21,
                          **changes}.items():
        with budget.phase(name):
            if name == "generation":
                budget.observe(True)
            clock.wait(seconds)
            if name == "generation":
                budget.observe(False)
    clock.wait(12)
    budget.past_quota = 7
    budget.close()
    return budget.to_dict()


def test_the_budget_line_names_every_phase_and_the_saturation():
    line = describe_budget(sample_budget())
    assert line == ("time budget (412 s): server start 31 s · generation 250 s (saturated 100%) · round tail 18 s "
                    "(7 answers generated past the quota) · training 80 s · swap 21 s · idle 12 s")
    blind = {**sample_budget(), "saturated_share": None}
    assert "generation 250 s (saturation unknown)" in describe_budget(blind)


def test_sessions_add_up_and_the_share_is_weighted_by_observed_seconds():
    first, second = sample_budget(), sample_budget(generation=50)
    total = add_budgets([first, second])
    assert total["wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"])
    assert total["past_quota"] == 14 and total["sessions"] == 2
    assert total["saturated_share"] == 1.0
    assert add_budgets([{**first, "observed_s": 0, "saturated_s": 0}])["saturated_share"] is None
    assert add_budgets([{"wall_s": "odd", "past_quota": None}])["sessions"] == 1  # odd stored data is skipped


def summary(k: int, **changes) -> RoundSummary:
    values = dict(round=k, model_version="v0", proposed=50, kept=20, rejected={"low_quality": 30}, failed={},
                  generation_s=40.0, prompt_tokens=1000, completion_tokens=4000, tail_s=6.0, past_quota=3)
    return RoundSummary(**{**values, **changes})


def rendered(result: RunResult) -> str:
    out = io.StringIO()
    Console(file=out, width=160).print(summary_table(result))
    return out.getvalue()


def test_the_summary_prints_the_budget_and_the_rounds_tails(tmp_path):
    budget = TimeBudget()
    with budget.phase("round_tail"):
        budget.past_quota = 3
    result = RunResult(folder=tmp_path, model="m", rounds=[summary(1), summary(2, past_quota=0)],
                       totals={"kept": 40, "rejected": 60}, reasons={}, stopped=False, elapsed_s=1.0, budget=budget)
    text = rendered(result)
    assert "tail" in text and " 6.0s " in text
    assert "(3 answers generated past the quota)" in text
    assert "time budget (" in text and "generation" in text and "over the run's" not in text
    result.budget_before = [sample_budget()]
    assert "over the run's 2 sessions (" in rendered(result)


def test_the_trackers_get_the_tail_and_the_share_only_when_known():
    class Store:
        def score_counts(self, aspect):
            return {}

        def model(self, version):
            return None

    metrics = round_metrics(summary(1, saturated_share=0.5), Store())
    assert metrics["isheep/tail_s"] == 6 and metrics["isheep/past_quota"] == 3
    assert metrics["isheep/saturated_share"] == 0.5
    assert "isheep/saturated_share" not in round_metrics(summary(1), Store())


def test_the_stats_snapshot_carries_every_sessions_budget():
    stats = RunStats(run_name="r", folder="f", endpoints=[], rounds_total=1, budget_before=[sample_budget()])
    sessions = stats.snapshot()["budget"]
    assert len(sessions) == 2 and sessions[0] == sample_budget() | {"started_at": sessions[0]["started_at"]}
    assert parts(sessions[1]) == pytest.approx(sessions[1]["wall_s"], abs=1e-9)


def test_the_monitor_reads_the_stored_sessions_of_a_run(tmp_path: Path):
    folder = make_finished_run(tmp_path / "run")
    store = RunStore.open(folder)
    store.write_sync(store.set_time_budgets([sample_budget(), sample_budget(generation=50)]))
    store.close_sync()
    reader = RunReader(folder)
    try:
        snapshot = reader.poll()
    finally:
        reader.close()
    assert [s["generation_s"] for s in snapshot.budget_sessions] == [250, 50]
