"""What serves the models to the roles, and how the served model changes between rounds.

:func:`open_serving` turns the config into endpoints (the user's, or a managed vLLM server started
now, and a second one for a base-model critic when the policy's weights are swapped in place)
and the swap strategy that fits them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import ConfigError

from .api import ServerApi
from .endpoints import EndpointPool
from .endpoints.managed import ManagedEndpoint
from .metrics import ServerMetrics
from .models import resolve_model
from .placement import replica_configs
from .server import ManagedServer, detect_device
from .swap import CommandSwap, FleetSwap, LoraSwap, NoSwap, ReloadSwap, Replica, RestartSwap, SwapStrategy

Progress = Callable[[str], None]


@dataclass
class Serving:
    """The pools the roles talk to, the servers this run manages, and the swap strategy.

    :meth:`aclose` releases all of it (connections first, then the servers).
    """

    pool: EndpointPool
    critic_pool: EndpointPool
    swapper: SwapStrategy
    base_path: Path | None = None
    #: Every managed server: the policy's replicas, then a base judge's server if any.
    servers: list[ManagedServer] = field(default_factory=list)
    #: The API key of each endpoint of ``pool``, in its order (for the metrics scraper).
    keys: list[str | None] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return [server.api_key for server in self.servers]

    def swappers(self) -> list[SwapStrategy]:
        """The swap strategy and, for a fleet, each replica's own (whose server calls are logged)."""
        members = [r.strategy for r in self.swapper.replicas] if isinstance(self.swapper, FleetSwap) else []
        return [self.swapper, *members]

    async def aclose(self) -> None:
        pools = {id(self.pool): self.pool, id(self.critic_pool): self.critic_pool}
        for pool in pools.values():
            await pool.aclose()
        for server in self.servers:
            await server.stop()


def _managed_pool(servers: list[ManagedServer], config: RunConfig) -> EndpointPool:
    cap = config.server.max_in_flight
    return EndpointPool([(ManagedEndpoint(server, timeout_s=config.client.timeout_s,
                                          connect_timeout_s=config.client.connect_timeout_s, max_in_flight=cap), cap)
                         for server in servers], config.client,
                        metrics=ServerMetrics([s.url for s in servers], [s.api_key for s in servers]))


def build_swapper(strategy: str, config: RunConfig, api: ServerApi | None, server: ManagedServer | None,
                  base_name: str, replica: int = 0) -> SwapStrategy:
    """The swap strategy named ``strategy``, talking to ``api`` (and ``server``, for restarts)."""
    if strategy == "none":
        return NoSwap()
    if api is None:
        raise ConfigError(f"the {strategy} swap needs an endpoint")
    if strategy == "reload":
        return ReloadSwap(api, config.swap.in_flight, server=server,
                          sleep=config.managed and config.server.placement == "colocate")
    if strategy == "lora":
        return LoraSwap(api, base_name)
    if strategy == "restart":
        if server is None:
            raise ConfigError("the restart swap restarts the managed server: it needs no --endpoint")
        return RestartSwap(server, api)
    assert config.swap.command is not None
    return CommandSwap(api, config.swap.command, rollback_command=config.swap.rollback_command,
                       expect_model=config.swap.expect_model, timeout_s=config.swap.timeout_s, replica=replica)


def fleet(strategy: str, config: RunConfig, apis: list[ServerApi], servers: list[ManagedServer | None],
          base_name: str, pools: list[EndpointPool]) -> SwapStrategy:
    """One swapper per replica; several become one :class:`FleetSwap` (one transaction over all)."""
    if strategy == "none":
        return NoSwap()
    members = [build_swapper(strategy, config, api, server, base_name, replica=i)
               for i, (api, server) in enumerate(zip(apis, servers))]
    if len(members) == 1:
        return members[0]
    return FleetSwap([Replica(api.base_url, member, server) for api, member, server in zip(apis, members, servers)],
                     pools)


def _judge_pool(config: RunConfig, environ: Mapping[str, str]) -> EndpointPool | None:
    """The pool of ``critic.endpoint``, the base-model server the user named for the judge."""
    if config.critic.endpoint is None:
        return None
    return EndpointPool.from_config([config.critic.endpoint], config.client, environ)


async def open_serving(config: RunConfig, folder: Path, environ: Mapping[str, str],
                       progress: Progress | None = None) -> Serving:
    """Endpoints, servers and swap strategy for a run; a failure here leaves no server running.

    Args:
        config: The run's config: ``endpoints`` (external) or ``server`` (managed).
        folder: The run folder (server logs go there).
        environ: Where API keys are looked up.
        progress: Receives start-up messages (model provisioning, server start).

    Raises:
        UserError: a model folder that is not one, a server that cannot start, a config the
            swap cannot work with.
    """
    strategy = config.swap_strategy()
    training = config.training_backend() == "trl"
    if not config.managed:
        pool = EndpointPool.from_config(config.endpoints, config.client, environ)
        base_path = None
        if training:
            if not config.trainer.base_model:
                raise ConfigError("training against an external endpoint needs trainer.base_model "
                                  "(the Hugging Face folder of the weights that endpoint serves)")
            base_path = resolve_model(config.trainer.base_model, progress)
        keys = [ep.resolved_key(environ) for ep in config.endpoints]
        apis = [ServerApi(ep.base_url, key) for ep, key in zip(config.endpoints, keys)]
        critic_pool = _judge_pool(config, environ) or pool
        swapper = fleet(strategy, config, apis, [None] * len(apis), config.model or "", [pool, critic_pool])
        return Serving(pool=pool, critic_pool=critic_pool, swapper=swapper, base_path=base_path, keys=keys)
    return await _open_managed(config, folder, environ, strategy, progress)


async def _open_managed(config: RunConfig, folder: Path, environ: Mapping[str, str], strategy: str,
                        progress: Progress | None) -> Serving:
    """Start the policy's replicas (at once) and a base judge's server if one is needed."""
    model_dir = resolve_model(config.server.model, progress)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = config.server.served_name or model_dir.name
    several = config.server.replicas > 1
    device = config.server.device if config.server.device != "auto" else detect_device()
    replicas = [ManagedServer(section, model_dir, folder / (f"server-{i + 1}.log" if several else "server.log"),
                              served_name=name, dev_mode=strategy == "reload", lora=strategy == "lora",
                              sleep_mode=config.server.placement == "colocate")
                for i, section in enumerate(replica_configs(config, device))]
    servers = list(replicas)
    try:
        await _start_all(replicas, progress)
        pool = critic_pool = _managed_pool(replicas, config)
        judge = _judge_pool(config, environ)
        if judge is not None:
            critic_pool = judge
        elif config.base_judge_server():
            # The policy's weights change in place: the base model needs a server of its own.
            base_server = ManagedServer(config.server.model_copy(update={"port": 0}), model_dir,
                                        folder / "server-base.log", served_name=name)
            servers.append(base_server)
            await base_server.start(progress)
            critic_pool = _managed_pool([base_server], config)
        apis = [ServerApi(server.url, server.api_key) for server in replicas]
        swapper = fleet(strategy, config, apis, list(replicas), name, [pool, critic_pool])
    except BaseException:
        for started in servers:
            await started.stop()
        raise
    return Serving(pool=pool, critic_pool=critic_pool, swapper=swapper, base_path=model_dir, servers=servers,
                   keys=[server.api_key for server in replicas])


async def _start_all(servers: list[ManagedServer], progress: Progress | None) -> None:
    """Start every replica at once; if one cannot start, none is left running (the caller stops them)."""
    results = await asyncio.gather(*(server.start(progress) for server in servers), return_exceptions=True)
    for out in results:
        if isinstance(out, BaseException):
            raise out
