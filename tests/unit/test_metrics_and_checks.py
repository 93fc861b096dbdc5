"""Reading vLLM's Prometheus /metrics text (``parse_metrics``), and the answer checks of the
evaluation gate: every check type in ``CHECKS`` on hand-made answers and on hostile ones (a
check that raises has failed), how sentences are counted, ``validate``'s messages, and
``load_eval_prompts`` on the shipped prompts and on broken files.

The bugs the first checks had (issue 12) stay as regression tests.
"""

from __future__ import annotations

import json

import pytest

from isheep.prompts import default_path
from isheep.runtime.core.errors import UserError
from isheep.runtime.data.checks import CHECKS, load_eval_prompts, loose_checks, run_checks, validate
from isheep.runtime.data.text import sentences
from isheep.runtime.serving.metrics import parse_metrics

# -- parse_metrics -------------------------------------------------------------------------------
# The shape of vLLM's /metrics with two engines (data parallel): HELP/TYPE comments, labelled
# series, counters with their _created companions, histograms, and other exporters' series.
VLLM_METRICS = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 3.0
vllm:num_requests_running{engine="1",model_name="smol"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smol"} 0.0
vllm:num_requests_waiting{engine="1",model_name="smol"} 7.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="smol"} 4.2e+04
vllm:prompt_tokens_total{engine="1",model_name="smol"} 800.0
vllm:prompt_tokens_created{engine="0",model_name="smol"} 1.7200001e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="smol"} 1.5e+03
vllm:generation_tokens_total{engine="1",model_name="smol"} 250.0
vllm:generation_tokens_created{engine="0",model_name="smol"} 1.7200001e+09
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="smol"} 5.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="smol"} 12.5
vllm:e2e_request_latency_seconds_count{engine="0",model_name="smol"} 9.0
"""


def test_parse_metrics_sums_wanted_series_over_engines():
    assert parse_metrics(VLLM_METRICS) == {
        "running": 5.0,                 # 3 + 2
        "waiting": 7.0,                 # 0 + 7
        "prompt_tokens": 42_800.0,      # 4.2e+04 + 800, _created ignored
        "generation_tokens": 1_750.0,   # 1.5e+03 + 250
    }


def test_parse_metrics_sums_the_prefix_caches_lookups_and_hits_over_engines():
    text = ('vllm:prefix_cache_queries_total{engine="0",model_name="smol"} 180.0\n'
            'vllm:prefix_cache_queries_total{engine="1",model_name="smol"} 20.0\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 160.0\n'
            'vllm:prefix_cache_hits_created{engine="0",model_name="smol"} 1.7200001e+09\n'
            'vllm:external_prefix_cache_hits_total{engine="0",model_name="smol"} 7.0\n')
    assert parse_metrics(text) == {"prefix_cache_queries": 200.0, "prefix_cache_hits": 160.0}


def test_parse_metrics_reads_unlabelled_series_and_the_kv_cache_gauge():
    text = ("# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 2.5e-01\n"
            "vllm:num_requests_running 1\n")
    assert parse_metrics(text) == {"kv_cache": 0.25, "running": 1.0}


def test_the_kv_cache_share_of_several_engines_is_the_fullest_one_not_a_sum():
    text = ('vllm:kv_cache_usage_perc{engine="0"} 0.6\nvllm:kv_cache_usage_perc{engine="1"} 0.5\n'
            'vllm:num_requests_running{engine="0"} 3\nvllm:num_requests_running{engine="1"} 2\n')
    assert parse_metrics(text) == {"kv_cache": 0.6, "running": 5.0}


@pytest.mark.parametrize("text", ["", "<html>404 Not Found</html>", "# HELP vllm:num_requests_running x\n",
                                  'process_cpu_seconds_total 3.5\nhttp_requests_total{code="200"} 10\n'])
def test_parse_metrics_of_a_server_without_vllm_series_is_empty(text):
    assert parse_metrics(text) == {}


# -- every check type: (type, value, passing answer, failing answer) ---------------------------------
CASES = [
    ("max_words", 3, "Thirty six.", "It is thirty six."),
    ("min_words", 4, "One two three four.", "Only three words."),
    ("contains", "negative", "NEGATIVE, clearly.", "It is positive."),
    ("not_contains", "positive", "Negative.", "Mostly Positive."),
    ("bullets", 3, "Tips:\n- Sleep early\n* Avoid screens\n\u2022 Keep it dark", "- Sleep early\n- Avoid screens"),
    ("bullets", 2, "- one\n- two", "- one\n-two"),  # "-two" is no bullet (no space after the dash)
    ("numbered", 2, "1. Boil water.\n2) Add pasta.", "1. Boil water.\n2. Add pasta.\n3. Drain."),
    ("lines", 2, "First line.\n\n   \nSecond line.", "One line only."),
    ("max_sentences", 2, "It is. It really is!", "One. Two? Three."),
    ("starts_with", "yes", "  Yes, it is the largest.", "No, it is not."),
    ("ends_with", "thank you.", "Please send it. Thank you.  ", "Thank you. Please send it."),
    ("lowercase", None, "give me the report by friday, please.", "Give me the report by Friday."),
    ("uppercase", None, "STOP THE PRESS!", "STOP the press!"),
    ("json_keys", ["name", "age"], '{"name": "Ada", "age": 36, "x": 1}', '{"name": "Ada"}'),
    ("json_keys", ["name"], '```json\n{"name": "Ada"}\n```', '["name"]'),
    ("json_keys", ["name"], '```JSON\n{"name": "Ada"}\n```', '```json\n{"name": "Ada"\n```'),
    ("max_words", 11, "Fewer than twelve words are written in this one short answer.",  # "fewer than 12"
     "Fewer than twelve words are written in this one short answer here."),
    ("max_words", 3, "It costs 3.5.", "It costs 3.5 dollars."),  # "3.5" is one word
    ("sentences", 2, "It is. It really is", "It is. It really is. Truly."),  # "exactly two"
    ("sentences", 1, "Dr. Smith met Mr. Jones at 3.30 p.m. on the dock.", "Dr. Smith left. Mr. Jones stayed."),
    ("min_sentences", 3, "One. Two! Three, at last", "One. Two."),
    ("max_sentences", 1, "Eat some fruit, e.g. an apple, i.e. something sweet", "Eat fruit. Then rest."),
    ("paragraphs", 2, "First part here.\n\nSecond part here.", "First part.\nStill first."),
    ("paragraphs", 3, "One.\n***\nTwo.\n***\nThree.", "One.\n***\nTwo."),
    ("contains", "new york", "I love New  York in May.", "I love Newark."),
    ("not_contains", "Au", "It failed because of rain.", "The symbol is Au."),
    ("keyword_count", {"word": "data", "at_least": 2}, "Data in, data out.", "Database data."),
    ("json", None, '```\n[1, 2, 3]\n```', "Here is the list: [1, 2, 3]"),
    ("title", None, "<<A Quiet Morning>>\nThe sun rose.", "A Quiet Morning\nThe sun rose."),
    ("sections", 2, "Section 1\nIntro.\n\nSECTION 2\nMore.", "Section 1\nIntro only."),
    ("highlights", 2, "The *first* and the **second** point.", "Only *one* point here."),
    ("placeholders", 2, "Send it to [name] at [address].", "Send it to [name] at home."),
    ("postscript", None, "See you soon.\n\nP.S. Bring snacks.", "See you soon. PS bring snacks."),
    ("two_responses", None, "Yes, go.\n******\nNo, stay.", "Yes, go.\n******\nYes, go."),
    ("max_capital_words", 1, "Use the API once, then rest.", "Use the API and the CLI."),
    ("min_capital_words", 2, "Read the FAQ and the API docs.", "Read the FAQ first."),
    ("repeat_prompt", "Name a planet.", "Name a planet. Mars.", "Mars is a planet."),
    ("quoted", None, '"Wrapped in quotes."', 'Not "wrapped" at all.'),
    ("no_commas", None, "One two three.", "One, two, three."),
    ("language", "de", "Das Wetter ist heute sehr schön, und wir gehen spazieren.",
     "The weather is very nice today and we are going for a walk."),
]


def test_every_check_type_has_cases():
    assert {case[0] for case in CASES} == set(CHECKS)


@pytest.mark.parametrize("kind, value, good, bad", CASES, ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)])
def test_check_passes_good_and_fails_bad_answers(kind, value, good, bad):
    check = {"type": kind} if value is None else {"type": kind, "value": value}
    assert validate(check) is None
    assert run_checks(good, [check]) == [True]
    assert run_checks(bad, [check]) == [False]


@pytest.mark.parametrize("kind", ["lowercase", "uppercase"])
def test_case_checks_need_letters(kind):
    assert run_checks("12 + 30 = 42", [{"type": kind}]) == [False]


@pytest.mark.parametrize("text", ["", "   ", "not json at all", "{broken"])
def test_json_keys_fails_on_no_object(text):
    assert not CHECKS["json_keys"](text, [])


def test_empty_answer_has_no_sentences():
    assert not CHECKS["max_sentences"]("", 3)


def test_run_checks_answers_each_check_in_order():
    checks = [{"type": "contains", "value": "36"}, {"type": "max_words", "value": 1}, {"type": "lowercase"}]
    assert run_checks("The answer is 36", checks) == [True, False, False]


# -- the bugs of the first checks (issue 12), kept as regressions --------------------------------------
def test_sentence_without_final_period_counts_as_one():
    assert CHECKS["max_sentences"]("Yes, it is the largest ocean", 1)


def test_unterminated_last_sentence_counts_towards_the_limit():
    assert not CHECKS["max_sentences"]("It is. It really is", 1)


def test_title_abbreviation_does_not_end_a_sentence():
    assert CHECKS["max_sentences"]("Dr. Smith arrived at noon.", 1)


def test_eg_does_not_end_a_sentence():
    assert CHECKS["max_sentences"]("Eat some fruit, e.g. an apple.", 1)


def test_contains_matches_whole_words_only():
    assert not CHECKS["contains"]("It failed because of rain.", "Au")


def test_json_fence_language_is_case_insensitive():
    assert CHECKS["json_keys"]('```JSON\n{"name": "Ada"}\n```', ["name"])


# -- hostile answers: a check that raises has failed, the evaluation goes on ---------------------------
RUNAWAY = ["[" * 3000, '{"a": ' * 3000, "```json\n" + "[" * 3000 + "\n```"]  # too deep for the JSON parser


@pytest.mark.parametrize("check", [{"type": "json"}, {"type": "json_keys", "value": ["a"]}])
@pytest.mark.parametrize("text", RUNAWAY, ids=["array", "object", "fenced"])
def test_json_checks_fail_on_runaway_nesting_instead_of_raising(check, text):
    # These raised RecursionError out of json.loads, which crashed the gate.
    assert run_checks(text, [check]) == [False]
    assert loose_checks(text, [check]) == [False]


HOSTILE = [*RUNAWAY, "\ud800 a lone surrogate \udfff", "\x00" * 200, "\u202e" + "*" * 500 + "\n" * 300,
           "e\u0301" * 300 + ". " * 300, "[" * 400 + "<<" * 400 + "P.S." * 100]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile-{n}" for n in range(len(HOSTILE))])
def test_every_check_answers_true_or_false_on_hostile_text(text):
    checks = [{"type": kind} if value is None else {"type": kind, "value": value} for kind, value, _, _ in CASES]
    for results in (run_checks(text, checks), loose_checks(text, checks)):
        assert len(results) == len(checks) and all(isinstance(r, bool) for r in results)


@pytest.mark.parametrize("error", [RecursionError, ValueError, TypeError, IndexError, MemoryError])
def test_a_check_that_raises_counts_as_failed_and_the_others_still_run(monkeypatch, error):
    def broken(text, value):
        raise error("hostile answer")

    monkeypatch.setitem(CHECKS, "lowercase", broken)
    checks = [{"type": "lowercase"}, {"type": "contains", "value": "hi"}, {"type": "max_words", "value": 0}]
    assert run_checks("hi", checks) == [False, True, False]
    assert loose_checks("hi", checks) == [False, True, False]


# -- counting sentences: "No.", single capitals and list items ----------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("No. 5 is the answer.", ["No. 5 is the answer"]),  # "No." before a number abbreviates it
    ("Take no. 12 and no. 4. Then stop.", ["Take no. 12 and no. 4", "Then stop"]),
    ("No. That is wrong.", ["No", "That is wrong"]),  # an answer "No." is a sentence
    ("Is it safe? No.", ["Is it safe", "No"]),
    ("No.", ["No"]),
    ("I pick option A. It is cheaper.", ["I pick option A", "It is cheaper"]),
    ("I PICK OPTION A. IT IS CHEAPER.", ["I PICK OPTION A", "IT IS CHEAPER"]),
    ("J. R. R. Tolkien wrote it.", ["J. R. R. Tolkien wrote it"]),  # initials stay inside
    ("The book is by J. Smith. It is long.", ["The book is by J. Smith", "It is long"]),
    ("John F. Kennedy spoke.", ["John F. Kennedy spoke"]),
    # Each list item is a sentence (or several), its marker none; the line before a list is one.
    ("1. Apples\n2. Pears", ["Apples", "Pears"]),
    ("1) Boil water.\n2) Add 3.5 cups of rice.", ["Boil water", "Add 3.5 cups of rice"]),
    ("Tips:\n- Sleep early\n* Avoid screens\n+ Read\n\u2022 Keep it dark",
     ["Tips:", "Sleep early", "Avoid screens", "Read", "Keep it dark"]),
    ("- Sleep early. Avoid screens.\n- Keep it dark", ["Sleep early", "Avoid screens", "Keep it dark"]),
    ("**Bold** start. Then more.", ["**Bold** start", "Then more"]),  # emphasis is no bullet
])
def test_sentences(text, expected):
    assert sentences(text) == expected


def test_a_numbered_list_counts_one_sentence_per_item():
    answer = "1. Water the basil every morning\n2. Keep it in the sun\n3. Pinch off the flowers"
    assert run_checks(answer, [{"type": "sentences", "value": 3}, {"type": "max_sentences", "value": 3}]) == [
        True, True]


# -- loose accuracy: IFEval's variants of an answer -------------------------------------------------
def test_loose_checks_forgive_a_preamble_a_sign_off_and_markdown_emphasis():
    answer = "Sure! Here is my answer:\n**hello world**\nHope this helps"
    checks = [{"type": "lowercase"}, {"type": "starts_with", "value": "hello"}, {"type": "max_words", "value": 2}]
    assert run_checks(answer, checks) == [False, False, False]
    assert loose_checks(answer, checks) == [True, True, True]
    assert loose_checks("HELLO", [{"type": "lowercase"}]) == [False]  # no variant is lowercase


# -- validate --------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, message", [
    ("max_words", "a check must be an object with a 'type'"),
    ({"value": 3}, "a check must be an object with a 'type'"),
    ({"type": "max_lines", "value": 3}, "unknown check type 'max_lines' (known: bullets, contains, ends_with, "
     "highlights, json, json_keys, keyword_count, language, lines, lowercase, max_capital_words, max_sentences, "
     "max_words, min_capital_words, min_sentences, min_words, no_commas, not_contains, numbered, paragraphs, "
     "placeholders, postscript, quoted, repeat_prompt, sections, sentences, starts_with, title, two_responses, "
     "uppercase)"),
    ({"type": "keyword_count", "value": "data"}, "check 'keyword_count' needs {\"word\": text, \"at_least\": count} "
     "as its 'value', got 'data'"),
    ({"type": "language", "value": ""}, "check 'language' needs a non-empty text as its 'value', got ''"),
    ({"type": "max_words"}, "check 'max_words' needs a 'value'"),
    ({"type": "json_keys"}, "check 'json_keys' needs a 'value'"),
])
def test_validate_says_what_is_wrong(check, message):
    assert validate(check) == message


@pytest.mark.parametrize("check", [{"type": "lowercase"}, {"type": "uppercase"}, {"type": "contains", "value": "x"}])
def test_validate_accepts_checks_that_need_no_more(check):
    assert validate(check) is None


# -- load_eval_prompts -----------------------------------------------------------------------------
def test_shipped_eval_prompts_load_with_valid_checks():
    prompts = load_eval_prompts()  # the instructions benchmark's, which the gate uses by default
    assert [p.id for p in prompts] == [f"inst-{n:03d}" for n in range(1, 331)]
    assert all(p.prompt.strip() and p.checks for p in prompts)
    assert all(validate(c) is None for p in prompts for c in p.checks)
    assert load_eval_prompts(default_path("benchmarks/instructions.jsonl")) == prompts
    assert [p.id for p in load_eval_prompts(limit=3)] == ["inst-001", "inst-002", "inst-003"]


def test_rows_without_id_are_named_by_line_number(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('\n{"prompt": "Say hi.", "checks": [{"type": "lowercase"}]}\n', encoding="utf-8")
    [prompt] = load_eval_prompts(path)
    assert (prompt.id, prompt.prompt, prompt.checks) == ("2", "Say hi.", [{"type": "lowercase"}])


def _row(**fields) -> str:
    return json.dumps({"id": "x", "prompt": "Say hi.", "checks": [{"type": "lowercase"}], **fields})


@pytest.mark.parametrize("content, expected", [
    ("", "hold no prompt"),
    ("\n  \n", "hold no prompt"),
    (_row() + "\n{not json\n", "line 2: not valid JSON"),
    (_row(prompt="   "), "line 1: needs a non-empty 'prompt'"),
    (_row(prompt=7), "line 1: needs a non-empty 'prompt'"),
    ("[1, 2]", "line 1: needs a non-empty 'prompt'"),
    (_row(checks=[{"type": "max_lines", "value": 3}]), "line 1: unknown check type 'max_lines'"),
    (_row(checks=[{"type": "bullets"}]), "line 1: check 'bullets' needs a 'value'"),
    # A prompt without checks passed whatever the answer (all([]) is True).
    (_row() + "\n" + _row(id="y", checks=[]), "line 2: needs at least one check in 'checks'"),
    ('{"prompt": "Say hi."}', "line 1: needs at least one check in 'checks'"),
    # Scores are kept per id: a second prompt with one merged into the first.
    (_row() + "\n\n" + _row(prompt="Say bye."), "line 3: id 'x' is already used on line 1"),
    (_row(id="2") + "\n" + json.dumps({"prompt": "Say bye.", "checks": [{"type": "lowercase"}]}),
     "line 2: id '2' is already used on line 1"),  # a row without id is named by its line number
])
def test_bad_eval_file_is_one_user_error(tmp_path, content, expected):
    path = tmp_path / "eval.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_eval_prompts(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_or_non_utf8_eval_file_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="evaluation prompts not found"):
        load_eval_prompts(tmp_path / "absent.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "Caf\xe9?"}\n')
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_eval_prompts(latin)


@pytest.mark.parametrize("checks, expected", [
    (5, "'checks' must be a list of checks, got 5"),
    (None, "'checks' must be a list of checks, got None"),
    ([{"type": "max_words", "value": "ten"}], "check 'max_words' needs a whole number of at least 0"),
    ([{"type": "bullets", "value": True}], "check 'bullets' needs a whole number of at least 0"),
    ([{"type": "contains", "value": ""}], "check 'contains' needs a non-empty text"),
    ([{"type": "json_keys", "value": "name"}], "check 'json_keys' needs a list of key names"),
])
def test_checks_of_the_wrong_shape_are_one_user_error_at_load(tmp_path, checks, expected):
    # Found writing these tests: they used to load, then raise TypeError mid-evaluation.
    path = tmp_path / "eval.jsonl"
    path.write_text(_row(checks=checks), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_eval_prompts(path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
