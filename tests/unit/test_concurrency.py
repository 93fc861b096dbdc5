"""The concurrency controller on replayed traces: each observation in, each limit checked.

The traces are simulated servers (a batch that fills at some size, a KV cache that overflows,
a rate-limited API), fed to the pure state machine exactly as the runtime would feed it.
"""

from __future__ import annotations

from isheep.runtime.serving.concurrency import ConcurrencyController, ControllerConfig, Observation


def _vllm(capacity: int):
    """A server that runs up to ``capacity`` requests at once and queues the rest."""
    def observe(t: float, in_flight: int, generated: int) -> Observation:
        running = min(in_flight, capacity)
        return Observation(t=t, in_flight=in_flight, generated=generated, running=running,
                           waiting=in_flight - running, kv_cache=running / (capacity + 8), preemptions=0)
    return observe


def _replay(controller: ConcurrencyController, server, steps: int) -> list[int]:
    limits, generated = [], 0
    for i in range(steps):
        in_flight = controller.limit  # the runtime keeps the limit full
        generated += min(in_flight, 1000) * 10
        limits.append(controller.observe(server(float(i), in_flight, generated)))
    return limits


def test_rising_load_doubles_until_the_server_queues_then_holds():
    controller = ConcurrencyController()
    limits = _replay(controller, _vllm(capacity=48), 10)
    assert limits[:5] == [4, 8, 16, 32, 64]  # the first observation only sets the baseline
    # At 64 the engine runs 48 and queues 16: more than a quarter of its batch waiting only adds
    # latency, so the limit is trimmed to the batch and a short queue (60), and holds there.
    assert limits[5:] == [60] * 5 and controller.saturated and controller.reason == "saturated"


def test_a_long_queue_is_trimmed_step_by_step_towards_the_engines_batch():
    controller = ConcurrencyController(ControllerConfig(ceiling=1024), limit=512)
    seen = [controller.observe(Observation(t=float(t), in_flight=512, generated=100 * t, running=120, waiting=392,
                                           kv_cache=0.7, preemptions=0)) for t in range(8)]
    assert seen == [512, 358, 250, 175, 150, 150, 150, 150]  # x0.7 each time, down to 120 x 1.25
    assert controller.reason == "saturated"


def test_growth_waits_until_the_engine_has_taken_up_what_was_sent():
    # Recorded on vLLM-CPU: 256 requests sent, the engine running 64 of them and queueing none yet
    # (the others are still being received and tokenized). Doubling now would be blind.
    controller = ConcurrencyController(ControllerConfig(ceiling=1024), limit=256)
    controller.observe(Observation(t=0.0, in_flight=256, generated=0, running=64, waiting=0, kv_cache=0.35))
    assert controller.observe(Observation(t=1.0, in_flight=256, generated=500, running=64, waiting=0,
                                          kv_cache=0.35)) == 256
    assert controller.reason.startswith("holding: the engine")
    assert controller.observe(Observation(t=2.0, in_flight=256, generated=900, running=250, waiting=0,
                                          kv_cache=0.9)) == 512


def test_after_the_first_saturation_it_grows_by_steps():
    controller = ConcurrencyController()
    server = _vllm(capacity=48)
    _replay(controller, server, 6)  # saturated, trimmed to 60
    limit = controller.limit

    def room(t: float) -> Observation:
        return Observation(t=t, in_flight=controller.limit, generated=int(t) * 1000, running=controller.limit,
                           waiting=0, kv_cache=0.5, preemptions=0)

    assert controller.observe(room(100.0)) == limit + 2
    assert controller.observe(room(101.0)) == limit + 4


def test_preemptions_and_a_full_kv_cache_shrink_the_limit():
    controller = ConcurrencyController(limit=40)
    base = dict(in_flight=40, running=40, waiting=0, kv_cache=0.8)
    controller.observe(Observation(t=0.0, generated=0, preemptions=3, **base))
    assert controller.observe(Observation(t=1.0, generated=400, preemptions=5, **base)) == 28
    assert controller.reason == "preemptions"
    full = {**base, "in_flight": 28, "running": 28, "kv_cache": 0.97}
    assert controller.observe(Observation(t=2.0, generated=800, preemptions=5, **full)) == 19
    assert controller.reason == "KV cache full"


def test_a_rate_limit_backs_off_and_pauses_until_retry_after():
    controller = ConcurrencyController(limit=20)
    limit = controller.observe(Observation(t=10.0, in_flight=20, generated=0, rate_limited=3, retry_after=5.0))
    assert limit == 14 and controller.reason == "rate limited"
    assert not controller.may_send(12.0, 0) and controller.may_send(15.0, 0) and not controller.may_send(15.0, 14)
    assert controller.observe(Observation(t=11.0, in_flight=14, generated=0, errors=2)) == 9


def test_the_limit_holds_when_the_runtime_has_fewer_requests_than_it_allows():
    controller = ConcurrencyController(limit=16)
    server = _vllm(capacity=64)
    controller.observe(server(0.0, 3, 0))
    assert controller.observe(server(1.0, 3, 30)) == 16 and controller.reason.startswith("holding")


def test_a_runtime_that_wanted_more_than_it_had_in_flight_at_the_instant_still_grows():
    # Between two observations the runtime had requests waiting for a slot (demand), though at
    # the instant of the reading a slot had just freed: it is limit-bound, so the limit grows.
    controller = ConcurrencyController(limit=8)
    controller.observe(Observation(t=0.0, in_flight=7, generated=0, running=7, waiting=0, demand=20))
    assert controller.observe(Observation(t=1.0, in_flight=7, generated=80, running=7, waiting=0, demand=20)) == 16


def test_ceiling_and_floor_are_respected():
    controller = ConcurrencyController(ControllerConfig(start=4, ceiling=10))
    assert max(_replay(controller, _vllm(capacity=1000), 8)) == 10
    low = ConcurrencyController(ControllerConfig(start=2, floor=2), limit=2)
    assert low.observe(Observation(t=0.0, in_flight=2, generated=0, rate_limited=1)) == 2


def test_without_server_metrics_it_climbs_to_where_throughput_stops_growing():
    """A hosted API whose throughput tops out at 24 requests in flight."""
    controller = ConcurrencyController()
    generated, limits = 0, []
    for i in range(30):
        in_flight = controller.limit
        generated += min(in_flight, 24) * 10
        limits.append(controller.observe(Observation(t=float(i), in_flight=in_flight, generated=generated)))
    assert 32 in limits and 64 in limits  # doubled past the knee, then found no gain
    assert all(24 <= k <= 34 for k in limits[-10:])  # probes by a step and comes back


def test_rising_latency_sends_the_hill_climb_back():
    controller = ConcurrencyController(limit=8)
    controller.observe(Observation(t=0.0, in_flight=8, generated=0, latency=1.0))
    assert controller.observe(Observation(t=1.0, in_flight=8, generated=800, latency=1.0)) == 16
    assert controller.observe(Observation(t=2.0, in_flight=16, generated=2400, latency=3.5)) == 8
    assert controller.reason == "latency rose"
