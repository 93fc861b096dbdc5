"""Checks of where a run's processes go, made when its config loads (before anything starts).

Each raises ``ValueError`` with one line naming the problem (the config loader turns it into the
one-line error and exit status 2). Kept apart from :mod:`.config` so the typed knobs stay
readable there and the rules about how they combine live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig


def check_serving(config: "RunConfig") -> None:
    """Every rule about servers, replicas, GPUs, the training processes and the base judge.

    Raises:
        ValueError: the first rule the config breaks.
    """
    _check_replicas(config)
    _check_devices(config)
    _check_colocate(config)
    _check_processes(config)
    _check_base_judge(config)
    _check_gate_judge(config)


def _check_replicas(config: "RunConfig") -> None:
    server = config.server
    if server.replicas > 1 and not config.managed:
        raise ValueError("server.replicas applies to managed servers; list the replicas you run as [[endpoints]]")
    if server.replicas > 1 and server.port:
        raise ValueError(f"server.port = {server.port} with server.replicas = {server.replicas}: each replica needs "
                         "its own port, leave server.port at 0 (free ports are picked)")
    if len(config.endpoints) > 1 and config.swap.strategy == "command" and not config.swap.rollback_command:
        # A fleet swaps as one: when one replica fails, those that took the checkpoint must go back.
        raise ValueError(f"the command swap on {len(config.endpoints)} endpoints needs swap.rollback_command: when "
                         "one replica fails, the others must be put back on the previous model")


def _check_devices(config: "RunConfig") -> None:
    """The servers' GPUs fit their parallelism, and training beside them leaves memory to train in."""
    server, trainer = config.server, config.trainer
    shards = server.tensor_parallel_size * server.data_parallel_size
    needed = shards * server.replicas
    if server.gpus and needed > len(server.gpus):
        what = "server.replicas x tensor_parallel_size" if server.replicas > 1 else "server.tensor_parallel_size"
        raise ValueError(f"{what} x data_parallel_size = {needed} needs {needed} GPUs; "
                         f"server.gpus lists {len(server.gpus)}")
    if server.gpus and server.replicas > 1 and len(server.gpus) != needed:
        raise ValueError(f"server.gpus lists {len(server.gpus)} GPUs for {server.replicas} replicas of {shards}: "
                         f"list exactly {needed}, {shards} per replica, in replica order")
    shared = sorted(set(server.gpus) & set(trainer.gpus))
    if shared and server.placement == "split" and server.gpu_memory_utilization is None:
        raise ValueError(f"server.gpus and trainer.gpus share GPU {', '.join(map(str, shared))}: vLLM takes 90% "
                         "of each by default; set server.gpu_memory_utilization to leave the trainer room, or "
                         "server.placement = 'colocate' to put the server to sleep while training runs")


def _check_colocate(config: "RunConfig") -> None:
    """Colocated training needs a managed server whose weights are reloaded in place after its sleep."""
    if config.server.placement != "colocate":
        return
    if not config.managed:
        raise ValueError("server.placement = 'colocate' puts the managed server to sleep while training runs; "
                         "it does not apply to [[endpoints]] this run does not manage")
    strategy = config.swap_strategy()
    if strategy != "reload":
        raise ValueError(f"server.placement = 'colocate' wakes the server and reloads the new weights in place: "
                         f"it needs the reload swap, not {strategy!r}")
    if config.base_judge_server():
        raise ValueError("server.placement = 'colocate' with critic.model = 'base' would keep a second server (the "
                         "base judge) awake on the GPUs during training: set critic.endpoint, or critic.model = "
                         "'current'")


def _check_processes(config: "RunConfig") -> None:
    trainer = config.trainer
    if trainer.num_processes == 1:
        return
    launcher = trainer.launcher
    if launcher and launcher[:2] != ["accelerate", "launch"]:
        raise ValueError(f"trainer.num_processes = {trainer.num_processes} runs the job under 'accelerate launch'; "
                         f"trainer.launcher is {' '.join(launcher)!r}: set the process count there instead")
    if "--num_processes" in launcher:
        raise ValueError("trainer.launcher already sets --num_processes: leave trainer.num_processes at 1")
    if trainer.gpus and trainer.num_processes > len(trainer.gpus):
        raise ValueError(f"trainer.num_processes = {trainer.num_processes} needs a GPU each; trainer.gpus lists "
                         f"{len(trainer.gpus)}")


def _check_base_judge(config: "RunConfig") -> None:
    """A base-model judge must not be the policy's server once its weights change in place."""
    if config.critic.endpoint is not None and config.critic.model != "base":
        raise ValueError("critic.endpoint is a server of the base model: it needs critic.model = 'base'")
    strategy = config.swap_strategy()
    if config.managed or config.critic.endpoint is not None or strategy not in ("reload", "command"):
        return  # managed: a second server serves the base; lora: the base stays served beside adapters
    rounds = [config, *(config.for_round(k) for k in config.per_round)]
    if any(c.critic.enabled and c.critic.model == "base" for c in rounds):
        raise ValueError(f"critic.model = 'base' with the {strategy} swap on an external endpoint would judge "
                         "with the new weights: set critic.endpoint to a server of the base model, or use the "
                         "lora swap, or critic.model = 'current'")


def _check_gate_judge(config: "RunConfig") -> None:
    """The gate's judge is the base model: it must be served beside the policy, unchanged."""
    evaluation = config.evaluation
    if not (evaluation.enabled and evaluation.judge) or evaluation.judge_endpoint is not None \
            or config.critic.endpoint is not None:
        return
    strategy = config.swap_strategy()
    if strategy in ("lora", "none") or (config.managed and config.critic.model == "base"
                                        and strategy in ("reload", "restart")):
        return  # the base stays served beside adapters, or a second managed server serves it
    raise ValueError(f"evaluation.judge asks the base model, which this run does not serve beside the policy with "
                     f"the {strategy} swap: set evaluation.judge_endpoint, or critic.model = 'base' on a managed "
                     "server (its second server judges), or the lora swap")
