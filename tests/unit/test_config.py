"""Config: defaults, TOML, environment and overrides, and one-line errors."""

import pytest

from isheep.runtime.core.config import RunConfig
from isheep.runtime.core.loading import load_config, parse_set_option
from isheep.runtime.core.errors import ConfigError


def test_defaults_follow_the_recipe():
    c = RunConfig()
    assert (c.proposer.num_examples, c.proposer.temperature, c.proposer.top_p, c.proposer.max_tokens) == (5, 1.0, 0.95, 1000)
    assert c.proposer.rouge_threshold == 0.7 and c.proposer.min_words == 4 and c.proposer.max_words == 150
    assert (c.curator.quality_threshold, c.curator.following_threshold) == (8, 8)
    assert c.rounds == 6 and c.max_proposed == 10_000
    assert "flowchart" in c.proposer.blacklist and "go to" in c.proposer.blacklist


def test_toml_file_env_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('rounds = 3\nmodel = "m"\n[proposer]\ntemperature = 0.7\n[[endpoints]]\nbase_url = "http://h:1/v1"\n')
    c = load_config(path, environ={})
    assert c.rounds == 3 and c.proposer.temperature == 0.7 and c.endpoints[0].base_url == "http://h:1/v1"
    c = load_config(path, environ={"OPENAI_BASE_URL": "http://env:2/v1", "OPENAI_API_KEY": "sk-env"})
    assert c.endpoints[0].base_url == "http://env:2/v1"
    assert c.endpoints[0].resolved_key({}) == "sk-env"
    c = load_config(path, {"rounds": 5, "proposer.temperature": 0.2,
                           "endpoints": [{"base_url": "http://cli:3"}]}, environ={"OPENAI_BASE_URL": "http://env:2/v1"})
    assert c.rounds == 5 and c.proposer.temperature == 0.2
    assert c.endpoints[0].base_url == "http://cli:3/v1"  # a bare host gets /v1


def test_api_key_env_wins_over_openai_api_key():
    c = load_config(overrides={"endpoints": [{"base_url": "http://h:1/v1", "api_key_env": "MY_KEY"}]},
                    environ={"OPENAI_API_KEY": "sk-a", "MY_KEY": "sk-b"})
    assert c.endpoints[0].resolved_key({"MY_KEY": "sk-b"}) == "sk-b"


def test_public_dict_has_no_secrets():
    c = load_config(overrides={"endpoints": [{"base_url": "http://h:1/v1", "api_key": "sk-secret"}]}, environ={})
    assert "sk-secret" not in str(c.public_dict())
    assert "sk-secret" not in repr(c)


@pytest.mark.parametrize("text,needle", [
    ("rounds = 0", "rounds: Input should be greater than or equal to 1 (got 0)"),
    ('rounds = "two"', "rounds: Input should be a valid integer"),
    ("colour = 3", "colour: unknown key"),
    ("[proposer]\ntemprature = 1.0", "proposer.temprature: unknown key"),
    ("[proposer]\ntemperature = 9", "proposer.temperature: Input should be less than or equal to 2"),
    ('[[endpoints]]\nbase_url = "localhost:8000"', "endpoint URL must look like http://host:port/v1"),
    ('[[endpoints]]\nbase_url = "http://h:99999/v1"', "invalid port"),
    ("round_size = 50\nmax_proposed = 10", "max_proposed (10) is smaller than round_size (50)"),
    ("rounds = [", "is not valid TOML"),
])
def test_bad_configs_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_missing_and_binary_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00rounds")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={})


def test_set_option_parsing():
    assert parse_set_option("proposer.temperature=0.5") == ("proposer.temperature", 0.5)
    assert parse_set_option("model=my-model") == ("model", "my-model")
    assert parse_set_option('proposer.blacklist=["x"]') == ("proposer.blacklist", ["x"])
    with pytest.raises(ConfigError):
        parse_set_option("novalue")


def test_a_recipe_sets_defaults_and_the_user_overrides_them_in_every_round():
    plain = load_config(overrides={"recipe": "dromedary"}, environ={})
    assert plain.rounds == 1 and plain.for_round(1).responder.max_tokens == 512  # the recipe's round 1
    assert plain.for_round(1).critic.enabled is False and plain.for_round(2).critic.enabled is True
    mine = load_config(overrides={"recipe": "dromedary", "responder.max_tokens": 320}, environ={})
    assert mine.for_round(1).responder.max_tokens == 320 and mine.for_round(1).responder.style == "principles"
    exact = load_config(overrides={"recipe": "dromedary", "per_round.1.responder.max_tokens": 400}, environ={})
    assert exact.for_round(1).responder.max_tokens == 400


def test_the_default_recipe_is_the_authors_isheep():
    config = load_config(environ={})
    assert config.recipe == "isheep" and config.close_on == "instructions" and config.round_size == 10_000
    assert (config.critic.model, config.critic.style, config.proposer.stop) == ("base", "authors", ["17"])
    assert (config.trainer.lora_r, config.trainer.learning_rate, config.trainer.lora_targets) == (8, 5e-5,
                                                                                                  ["all-linear"])


def test_a_resumed_config_round_trips_through_the_stored_form():
    first = load_config(overrides={"recipe": "dromedary", "rounds": 3}, environ={})
    again = load_config(base=first.public_dict(), environ={})
    assert again == first and again.for_round(1) == first.for_round(1)


def test_a_run_stored_by_an_older_version_loads_without_its_retired_keys(tmp_path):
    stored = load_config(environ={}).public_dict()
    stored["evaluation"]["critic_weight"] = 0.5  # what runs made before the checked gate hold
    config = load_config(base=stored, environ={})
    assert "critic_weight" not in config.public_dict()["evaluation"]
    assert stored["evaluation"]["critic_weight"] == 0.5  # the caller's copy is left alone
    path = tmp_path / "old.toml"
    path.write_text("[evaluation]\ncritic_weight = 0.5\n")
    with pytest.raises(ConfigError, match=r"old.toml: evaluation.critic_weight: this key was retired"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=r"--set: evaluation.critic_weight: this key was retired"):
        load_config(overrides={"evaluation.critic_weight": 0.5}, environ={})


def test_no_endpoint_key_is_kept_in_the_stored_config():
    endpoint = {"base_url": "http://judge:8000/v1", "api_key": "sk-inline-secret"}
    config = load_config(overrides={"critic.model": "base", "critic.endpoint": endpoint,
                                    "evaluation.judge_endpoint": endpoint,
                                    "endpoints": [endpoint]}, environ={})
    stored = config.public_dict()
    assert "sk-inline-secret" not in str(stored) and "api_key" not in str(stored)
    again = load_config(base=stored, environ={})
    assert again.critic.endpoint.api_key is None and again.evaluation.judge_endpoint.api_key is None
