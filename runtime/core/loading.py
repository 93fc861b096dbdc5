"""Building a run's config from its sources, weakest first: the runtime's defaults, the recipe,
a TOML file (or a resumed run's stored config), the environment (``OPENAI_BASE_URL``,
``OPENAI_API_KEY``), command-line flags. Every failure is one line (:class:`ConfigError`).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from pydantic import SecretStr, ValidationError

from .config import RunConfig, missing_trackers
from .errors import ConfigError
from .recipes import DEFAULT_RECIPE, flatten, load_recipe, merge, unflatten

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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


#: Keys earlier versions had, and why they went: a run folder of an older version stores them.
RETIRED = {
    "evaluation.critic_weight": "the gate no longer asks the model it judges; it runs a checked benchmark",
}


def _retire(data: dict[str, Any], source: str, stored: bool) -> None:
    """Drop retired keys from a stored config (a run made by an older version still resumes and is
    still evaluated); in a user's file or flags, name them as an error that says why they went."""
    for dotted, why in RETIRED.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            if not stored:
                raise ConfigError(f"{source}: {dotted}: this key was retired ({why}); remove it")
            del node[leaf]


def _recipe_under(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The recipe's defaults, less its per-round values for keys the user set for every round.

    The user's config overrides the recipe everywhere: ``responder.max_tokens = 320`` in a file
    applies in Dromedary's first round too, though the recipe sets another value for that round.
    """
    mine = {key for key in flatten({k: v for k, v in user.items() if k != "per_round"})}
    per_round = {}
    for k, override in defaults.get("per_round", {}).items():
        kept = {key: value for key, value in flatten(override).items() if key not in mine}
        if kept:
            per_round[k] = unflatten(kept)
    return {**defaults, "per_round": per_round}


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig`: defaults < the recipe < ``base`` or the file < environment < overrides.

    Args:
        path: A TOML config file.
        overrides: Dotted keys (``proposer.temperature``) and their values; ``recipe`` among them
            picks the recipe.
        environ: Where ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` are read (default: the process's).
        base: A config as plain data used instead of a file (``--resume``: the run's stored one).

    Raises:
        ConfigError: the file cannot be read or parsed, a key is unknown or a value invalid, or
            the recipe does not exist.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))
    source = "config"
    if path is not None:
        data = read_toml(Path(path))
        source = str(path)
    env_url = environ.get("OPENAI_BASE_URL")
    if env_url:
        data["endpoints"] = [{**ep, "base_url": env_url} for ep in data.get("endpoints", [])[:1]] or [
            {"base_url": env_url}
        ]
    _retire(data, source, stored=path is None and base is not None)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    _retire(data, "--set", stored=False)
    name = data.get("recipe", DEFAULT_RECIPE)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: recipe: expected a recipe name, got {name!r}")
    data = merge(_recipe_under(load_recipe(name).defaults, data), data)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    missing = missing_trackers(config.trainer.report_to)
    if missing and not (path is None and base is not None and "trainer.report_to" not in (overrides or {})):
        # A stored run's trackers are checked when it trains again, not to evaluate or report on it.
        raise ConfigError(f"{source}: trainer.report_to: {', '.join(missing)} not installed: "
                          "pip install 'isheep[trackers]' (or the package)")
    env_key = environ.get("OPENAI_API_KEY")
    if env_key:
        for endpoint in config.endpoints:
            if endpoint.api_key_env is None:
                endpoint.api_key = SecretStr(env_key)
    return config
