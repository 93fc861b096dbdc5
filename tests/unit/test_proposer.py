"""The Proposer's parsing and the recipe's rule filters."""

import pytest

from isheep.agents.proposer import Draft, blacklist_pattern, parse_drafts, render_examples, screen
from isheep.runtime.core.config import ProposerConfig
from isheep.runtime.core.messages import SeedTask

CONFIG = ProposerConfig()
BLACKLIST = blacklist_pattern(CONFIG.blacklist)


def reason(instruction: str, value: str = "") -> str | None:
    return screen(Draft(instruction, value), CONFIG, BLACKLIST)


def test_render_examples_marks_empty_inputs():
    # The authors' layout: ### between tasks, the input on a line of its own, <noinput> when empty.
    text = render_examples([SeedTask(instruction="Name a fruit.", input=""),
                            SeedTask(instruction="Sort these.", input="3, 1, 2")])
    assert text == ("###\n1. Instruction: Name a fruit.\n1. Input:\n<noinput>\n"
                    "###\n2. Instruction: Sort these.\n2. Input:\n3, 1, 2")


def test_render_examples_as_a_plain_list():
    text = render_examples([SeedTask(instruction="Name a fruit.", input=""),
                            SeedTask(instruction="Sort these.", input="3, 1, 2")], "list")
    assert text == "1. Name a fruit.\n2. Sort these."


def test_parse_instruction_input_blocks_with_multiline_inputs():
    text = ("6. Instruction: Summarize the text below in one sentence.\n6. Input:\nThe council met.\nIt voted yes.\n"
            "7. Instruction: Name three primary colours.\n7. Input: <noinput>\n"
            "8. Instruction: Translate the word into Spanish.\n8. Input: house\n8. Output: casa\n")
    drafts = parse_drafts(text, truncated=False)
    assert [(d.instruction, d.input) for d in drafts] == [
        ("Summarize the text below in one sentence.", "The council met.\nIt voted yes."),
        ("Name three primary colours.", ""), ("Translate the word into Spanish.", "house")]


def test_numbers_inside_instructions_are_dropped():
    drafts = parse_drafts("6. Instruction: 1. What do you do to make a salad?\n6. Input: <noinput>", truncated=False)
    assert drafts == [Draft("What do you do to make a salad?", "")]


def test_parse_plain_numbered_list():
    drafts = parse_drafts("Sure!\n1. Write a limerick about cats.\n2) List four uses of vinegar.\n", truncated=False)
    assert [d.instruction for d in drafts] == ["Write a limerick about cats.", "List four uses of vinegar."]


def test_truncated_reply_drops_its_last_task():
    text = "1. Instruction: Explain photosynthesis simply.\n1. Input: <noinput>\n2. Instruction: Describe how a"
    assert [d.instruction for d in parse_drafts(text, truncated=True)] == ["Explain photosynthesis simply."]
    assert len(parse_drafts(text, truncated=False)) == 2


def test_garbage_parses_to_nothing():
    assert parse_drafts("I am not sure what you mean.", truncated=False) == []


@pytest.mark.parametrize("instruction,value,expected", [
    ("Name three colours.", "", "too_short:3"),
    ("word " * 151, "", "too_long:151"),
    ("Draw a cat in the style of Picasso.", "", "blacklist:draw"),
    ("Describe the images in this report carefully.", "", "blacklist:images"),
    ("Tell me how to go to the station quickly.", "", "blacklist:go to"),
    ("Explain what a profile of a customer should contain.", "", None),  # 'file' only as a word
    ("\u00c9crivez une phrase sur la mer.", "", "non_ascii_start"),
    ("- Write a haiku about the moon.", "", "starts_with_punctuation"),
    ("Write a haiku. Output: a poem about spring.", "", "format_leak"),
    ("Summarize the page at this address.", "https://example.com/x", "url"),
    ("Translate the following sentence into German.", "no input", "input_says_noinput"),
    ("Correct the grammar of: she go home.", "she go home", "input_in_instruction"),
    ("Give three tips for learning a language.", "", None),
])
def test_recipe_filters(instruction, value, expected):
    assert reason(instruction.strip(), value) == expected
