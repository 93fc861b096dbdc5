"""What serves the models to the roles, and how the served model changes between rounds.

:func:`open_serving` turns the config into endpoints (the user's, or a managed vLLM server started
now, and a second one for a base-model critic when the policy's weights are swapped in place)
and the swap strategy that fits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.errors import ConfigError

from .api import ServerApi
from .endpoints import EndpointPool
from .endpoints.managed import ManagedEndpoint
from .models import resolve_model
from .server import ManagedServer
from .swap import CommandSwap, LoraSwap, NoSwap, ReloadSwap, RestartSwap, SwapStrategy

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
    servers: list[ManagedServer] = field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return [server.api_key for server in self.servers]

    async def aclose(self) -> None:
        pools = {id(self.pool): self.pool, id(self.critic_pool): self.critic_pool}
        for pool in pools.values():
            await pool.aclose()
        for server in self.servers:
            await server.stop()


def _managed_pool(server: ManagedServer, config: RunConfig) -> EndpointPool:
    endpoint = ManagedEndpoint(server, timeout_s=config.client.timeout_s,
                               connect_timeout_s=config.client.connect_timeout_s,
                               max_in_flight=config.server.max_in_flight)
    return EndpointPool([(endpoint, config.server.max_in_flight)], config.client)


def build_swapper(strategy: str, config: RunConfig, api: ServerApi | None, server: ManagedServer | None,
                  base_name: str) -> SwapStrategy:
    """The swap strategy named ``strategy``, talking to ``api`` (and ``server``, for restarts)."""
    if strategy == "none":
        return NoSwap()
    if api is None:
        raise ConfigError(f"the {strategy} swap needs an endpoint")
    if strategy == "reload":
        return ReloadSwap(api, config.swap.in_flight)
    if strategy == "lora":
        return LoraSwap(api, base_name)
    if strategy == "restart":
        if server is None:
            raise ConfigError("the restart swap restarts the managed server: it needs no --endpoint")
        return RestartSwap(server, api)
    assert config.swap.command is not None
    return CommandSwap(api, config.swap.command, rollback_command=config.swap.rollback_command,
                       expect_model=config.swap.expect_model, timeout_s=config.swap.timeout_s)


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
        first = config.endpoints[0]
        api = ServerApi(first.base_url, first.resolved_key(environ))
        swapper = build_swapper(strategy, config, api, None, config.model or "")
        return Serving(pool=pool, critic_pool=_judge_pool(config, environ) or pool, swapper=swapper,
                       base_path=base_path)

    model_dir = resolve_model(config.server.model, progress)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = config.server.served_name or model_dir.name
    servers: list[ManagedServer] = []
    try:
        server = ManagedServer(config.server, model_dir, folder / "server.log", served_name=name,
                               dev_mode=strategy == "reload", lora=strategy == "lora")
        servers.append(server)
        await server.start(progress)
        pool = critic_pool = _managed_pool(server, config)
        judge = _judge_pool(config, environ)
        if judge is not None:
            critic_pool = judge
        elif config.base_judge_server():
            # The policy's weights change in place: the base model needs a server of its own.
            base_server = ManagedServer(config.server.model_copy(update={"port": 0}), model_dir,
                                        folder / "server-base.log", served_name=name)
            servers.append(base_server)
            await base_server.start(progress)
            critic_pool = _managed_pool(base_server, config)
        swapper = build_swapper(strategy, config, ServerApi(server.url, server.api_key), server, name)
    except BaseException:
        for started in servers:
            await started.stop()
        raise
    return Serving(pool=pool, critic_pool=critic_pool, swapper=swapper, base_path=model_dir, servers=servers)
