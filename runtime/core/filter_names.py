"""The names of the rule filters a config may list, and the recipe's blacklist: data the config
checks against, kept apart from the config's sections (the filters themselves are in
``runtime/data``)."""

from __future__ import annotations


#: Words that make the recipe drop an instruction (tasks a text model cannot do).
RECIPE_BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)

#: The Proposer's rule filters, named by the reason they give a dropped instruction.
INSTRUCTION_FILTERS = ("structure", "length", "blacklist", "blacklist_input", "starts_with_punctuation",
                       "non_ascii_start", "write_a_program", "input_says_noinput", "format_leak", "url",
                       "placeholder", "input_in_instruction")
DEFAULT_INSTRUCTION_FILTERS = ("length", "blacklist", "non_ascii_start", "starts_with_punctuation", "format_leak",
                               "url", "input_says_noinput", "input_in_instruction")
#: The Responder's rule filters, named by the reason they give a dropped answer.
RESPONSE_FILTERS = ("empty_response", "role_leak", "role_lines", "answer_choices", "noinput_in_response", "can_you",
                    "do_you", "question_after_break", "choice_letters", "cjk", "apology_start")
DEFAULT_RESPONSE_FILTERS = ("empty_response", "role_leak", "answer_choices", "noinput_in_response")


def known_filters(names: list[str], known: tuple[str, ...], what: str) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} filter(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return names
