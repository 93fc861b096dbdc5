"""Builds ``instructions.jsonl``, the ``instructions`` benchmark: everyday tasks, each with one to
three verifiable instructions of IFEval's kinds, phrased in plain words.

Run ``python prompts/benchmarks/make_instructions.py > prompts/benchmarks/instructions.jsonl``;
a test checks the shipped file is this script's output. Deterministic (a fixed seed). Each
instruction carries tags, and two that share a tag never go in one prompt (an answer cannot be
both JSON and a bulleted list, both in German and hold the English word "budget"; one that
begins by repeating the request cannot also be lowercase or short). Text an answer must hold
(a word, a start or end phrase, the repeated request) is also checked against the forbidden
word and the ban on commas, so "Thanks for reading." never comes with "do not use 'thanks'".
The first instruction of prompt i is the i-th of the list in turn, so every kind is asked
about equally. Standard library only: this file is not part of the installed package.
"""

from __future__ import annotations

import json
import random
import re
import sys

SEED = 20261125
PROMPTS = 330

# (task, a word an answer to it would likely use: the forbidden-word instruction names it)
TASKS = [
    ("Explain how to keep a basil plant alive on a windowsill.", "water"),
    ("Describe what a good first day at a new job looks like.", "team"),
    ("Give advice to someone who wants to start running in the mornings.", "shoes"),
    ("Explain why the sky changes colour at sunset.", "light"),
    ("Write a short note to a neighbour thanking them for watering your plants.", "thanks"),
    ("Describe how to make a simple vegetable soup.", "pot"),
    ("Explain what a budget is to a teenager getting their first paycheck.", "money"),
    ("Suggest ways to make a small apartment feel bigger.", "space"),
    ("Describe the life cycle of a butterfly.", "caterpillar"),
    ("Explain how a bicycle's gears make climbing hills easier.", "pedal"),
    ("Write a short product description for a reusable water bottle.", "plastic"),
    ("Give tips for studying for an exam while working part-time.", "time"),
    ("Explain why people should back up their computer files.", "data"),
    ("Describe a quiet walk through a forest in early autumn.", "leaves"),
    ("Explain how vaccines help the body fight disease.", "immune"),
    ("Write a message inviting coworkers to a farewell lunch.", "lunch"),
    ("Describe how to change a flat tyre on a car.", "jack"),
    ("Explain the difference between weather and climate.", "temperature"),
    ("Give advice on choosing a first pet for a family with young children.", "dog"),
    ("Describe what makes a good public library.", "books"),
    ("Explain how compound interest works with a simple example.", "interest"),
    ("Write a short review of an imaginary pizza restaurant.", "cheese"),
    ("Suggest a plan for a rainy Sunday at home.", "movie"),
    ("Explain why sleep matters for memory.", "brain"),
    ("Describe how honeybees make honey.", "flowers"),
    ("Give tips for writing a clear email to a busy manager.", "subject"),
    ("Explain how a refrigerator keeps food cold.", "heat"),
    ("Write a short speech for a friend's birthday dinner.", "friend"),
    ("Describe the main parts of a volcano and what each does.", "lava"),
    ("Explain how to prepare for a job interview over video call.", "camera"),
    ("Give advice on reducing food waste at home.", "fridge"),
    ("Explain what a password manager does and why it helps.", "passwords"),
    ("Describe a busy market on a Saturday morning.", "stalls"),
    ("Explain how tides are caused by the Moon.", "gravity"),
    ("Write a short apology to a customer whose order arrived late.", "delay"),
    ("Suggest ways for a team to run shorter, better meetings.", "agenda"),
    ("Explain how to plant a tree so that it grows well.", "roots"),
    ("Describe what a lighthouse keeper's day might have been like.", "lamp"),
    ("Explain why recycling aluminium cans saves energy.", "metal"),
    ("Give advice to a student giving their first class presentation.", "slides"),
    ("Explain how a library's lending system works.", "card"),
    ("Describe the sounds of a city at night.", "traffic"),
    ("Explain how to brew a good cup of tea.", "kettle"),
    ("Write a short story opening about a lost umbrella.", "rain"),
    ("Explain what inflation means for everyday shopping.", "prices"),
    ("Give tips for taking better photos with a phone.", "light"),
    ("Explain how the heart pumps blood around the body.", "blood"),
    ("Describe how to organise a kitchen drawer that is always messy.", "drawer"),
    ("Suggest how a town could make its streets safer for cyclists.", "lanes"),
    ("Explain why we have leap years.", "calendar"),
    ("Write a short welcome message for new members of a chess club.", "games"),
    ("Describe how bread rises.", "yeast"),
    ("Explain how to care for a cast-iron pan.", "oil"),
    ("Give advice on learning a new language as an adult.", "practice"),
    ("Explain what a solar panel does.", "sun"),
    ("Describe the view from the top of a hill after a long climb.", "valley"),
    ("Explain how a map's scale works.", "distance"),
    ("Write a short note asking a landlord to fix a leaking tap.", "tap"),
    ("Suggest ways to stay focused when working from home.", "desk"),
    ("Explain why some leaves change colour in autumn.", "green"),
    ("Describe how to pack a suitcase for a week-long trip.", "clothes"),
    ("Explain what a museum curator does.", "exhibits"),
    ("Give tips for keeping a houseplant alive during a holiday.", "water"),
    ("Explain how a thermometer measures temperature.", "degrees"),
    ("Write a short thank-you message to a teacher at the end of the year.", "class"),
    ("Describe how snowflakes form.", "ice"),
]

WORDS = ["balance", "patience", "window", "river", "budget", "morning", "careful", "simple", "quiet", "journey",
         "garden", "bridge", "steady", "practical", "curious", "honest"]
PHRASES_START = ["Here is my answer", "In short", "Let me explain", "Good question"]
PHRASES_END = ["Is there anything else I can help with?", "That is all.", "Thanks for reading.", "Good luck!"]
LANGUAGES = [("de", "German"), ("fr", "French"), ("es", "Spanish"), ("it", "Italian"), ("pt", "Portuguese")]
KEY_SETS = [["summary", "steps"], ["title", "points"], ["answer", "reason"], ["topic", "advice", "example"]]

STRUCT, CASE, START, END, LENGTH, SENT, KEYWORD, LANG, COMMAS, TITLE, EMPH, LIMIT = (
    "struct", "case", "start", "end", "length", "sent", "keyword", "lang", "commas", "title", "emph", "limit")
# LIMIT: an upper bound on length, which the words and the sentence of a repeated request use up.
JSON_TAGS = {STRUCT, CASE, START, END, LANG, COMMAS, TITLE, EMPH, SENT}


def _kinds(rng: random.Random, task: str, avoid: str) -> list[tuple[dict, str, set[str]]]:
    """Every instruction this task can carry: (check, how it is asked, tags)."""
    n = rng.choice
    word, start, end = n(WORDS), n(PHRASES_START), n(PHRASES_END)
    code, language = n(LANGUAGES)
    keys = n(KEY_SETS)
    count = n([2, 3])
    at_most, at_least = n([40, 60, 80, 100]), n([120, 150, 200])
    named = ", ".join(f'"{k}"' for k in keys[:-1]) + f' and "{keys[-1]}"'
    return [
        ({"type": "max_words", "value": at_most}, f"Use at most {at_most} words.", {LENGTH, LIMIT}),
        ({"type": "min_words", "value": at_least}, f"Write at least {at_least} words.", {LENGTH}),
        ({"type": "sentences", "value": count + 1}, f"Answer in exactly {count + 1} sentences.",
         {SENT, STRUCT, LENGTH, END, LIMIT}),
        ({"type": "max_sentences", "value": count}, f"Use no more than {count} sentences.",
         {SENT, STRUCT, LENGTH, END, LIMIT}),
        ({"type": "min_sentences", "value": count + 4}, f"Write at least {count + 4} sentences.", {SENT, STRUCT, LENGTH}),
        ({"type": "paragraphs", "value": count + 1},
         f"Write exactly {count + 1} paragraphs, separated from each other by the Markdown divider ***.", {STRUCT, TITLE, END}),
        ({"type": "contains", "value": word}, f"Include the word \"{word}\" somewhere in your answer.", {KEYWORD}),
        ({"type": "not_contains", "value": avoid}, f"Do not use the word \"{avoid}\" anywhere.", set()),
        ({"type": "keyword_count", "value": {"word": word, "at_least": count}},
         f"Use the word \"{word}\" at least {count} times.", {KEYWORD}),
        ({"type": "bullets", "value": count + 2},
         f"Format the answer as exactly {count + 2} Markdown bullet points, each starting with \"- \".", {STRUCT}),
        ({"type": "numbered", "value": count + 2},
         f"Give it as a numbered list of exactly {count + 2} items (1., 2., and so on).", {STRUCT}),
        ({"type": "json"}, "Put your entire output in JSON format; a Markdown code fence around it is fine.", JSON_TAGS),
        ({"type": "json_keys", "value": keys}, f"Reply with a JSON object only, with the keys {named}.", JSON_TAGS),
        ({"type": "title"}, "Give your answer a title wrapped in double angular brackets, like <<a title>>.", {TITLE}),
        ({"type": "sections", "value": count},
         f"Split your answer into {count} sections, each starting with its label: Section 1, Section 2, and so on.",
         {STRUCT}),
        ({"type": "highlights", "value": count},
         f"Highlight at least {count} parts of your answer with Markdown asterisks, as in *this part*.", {EMPH}),
        ({"type": "placeholders", "value": count},
         f"Include at least {count} placeholders in square brackets that a reader fills in, such as [date].", set()),
        ({"type": "postscript"}, "End with a postscript that starts with P.S.", {END}),
        ({"type": "two_responses"},
         "Give two different answers, separated by a line of six asterisks (******) and nothing else between them.",
         {STRUCT, START, END}),
        ({"type": "lowercase"}, "Write everything in lowercase letters; no capital letter anywhere.", {CASE}),
        ({"type": "uppercase"}, "Write your whole answer in English, in capital letters only.", {CASE, LANG}),
        ({"type": "max_capital_words", "value": count},
         f"Write at most {count} words entirely in capital letters.", {CASE}),
        ({"type": "min_capital_words", "value": count + 2},
         f"Stress the key ideas by writing at least {count + 2} words entirely in CAPITAL letters.", {CASE}),
        ({"type": "starts_with", "value": start}, f"Begin your answer with the exact words \"{start}\".", {START}),
        ({"type": "ends_with", "value": end},
         f"Finish with the exact phrase \"{end}\", with nothing after it.", {END}),
        ({"type": "repeat_prompt", "value": task},
         "Before answering, repeat the request above word for word (only its first sentence, not these "
         "instructions), then give your answer.", {START, LANG, CASE, LIMIT}),
        ({"type": "quoted"}, "Wrap your entire answer in double quotation marks.", {START, END, STRUCT}),
        ({"type": "no_commas"}, "Do not use a single comma in your answer.", {COMMAS}),
        ({"type": "language", "value": code},
         f"Write your answer in {language}, and in no other language.", {LANG, KEYWORD, START, END}),
    ]


def _whole_word(word: str, text: str) -> bool:
    """Whether ``word`` is in ``text`` as a whole word, any case (as the not_contains check reads it)."""
    return re.search(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, re.IGNORECASE) is not None


def _required_texts(check: dict) -> list[str]:
    """Text an answer passing ``check`` holds word for word."""
    kind, value = check["type"], check.get("value")
    if kind in ("contains", "starts_with", "ends_with", "repeat_prompt"):
        return [value]
    return [value["word"]] if kind == "keyword_count" else []


def _clash(checks: list[dict]) -> bool:
    """Whether text the answer must hold breaks a ban of another check: the forbidden word, commas."""
    held = [text for check in checks for text in _required_texts(check)]
    kinds = {check["type"] for check in checks}
    banned = [check["value"] for check in checks if check["type"] == "not_contains"]
    return any(_whole_word(word, text) for word in banned for text in held) or (
        "no_commas" in kinds and any("," in text for text in held))


def build(seed: int = SEED, count: int = PROMPTS) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        task, avoid = TASKS[i % len(TASKS)]
        kinds = _kinds(rng, task, avoid)
        first = kinds[i % len(kinds)]
        chosen, tags = [first], set(first[2])
        wanted = rng.choices([1, 2, 3], weights=[3, 5, 3])[0]
        for other in rng.sample(kinds, len(kinds)):
            if len(chosen) >= wanted:
                break
            if other[0]["type"] in {c[0]["type"] for c in chosen} or other[2] & tags:
                continue
            if _clash([c[0] for c in chosen] + [other[0]]):
                continue
            chosen.append(other)
            tags |= other[2]
        prompt = " ".join([task, *(how for _, how, _ in chosen)])
        rows.append({"id": f"inst-{i + 1:03d}", "prompt": prompt, "checks": [check for check, _, _ in chosen]})
    return rows


if __name__ == "__main__":
    for row in build():
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
