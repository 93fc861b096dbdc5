"""The fast ROUGE-L index must make exactly rouge_score's decisions."""

import random

import pytest
from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import _lcs_table

from isheep.runtime.data.dedup import RougeIndex, lcs_length, min_overlap, rouge_l_f, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def naive_decisions(texts, threshold=0.7):
    """Self-Instruct's loop: compare with every instruction kept so far."""
    pool, decisions = [], []
    for text in texts:
        duplicate = any(SCORER.score(text, old)["rougeL"].fmeasure > threshold for old in pool)
        decisions.append(duplicate)
        if not duplicate:
            pool.append(text)
    return decisions


def near_duplicates(seed: int, count: int, vocabulary: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)] + "the a of to and write give explain list".split()
    texts: list[str] = []
    for _ in range(count):
        if texts and rng.random() < 0.45:
            tokens = rng.choice(texts).split()
            for _ in range(rng.randint(0, 4)):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            if rng.random() < 0.5:
                tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(words))
            if rng.random() < 0.3 and len(tokens) > 2:
                del tokens[rng.randrange(len(tokens))]
            texts.append(" ".join(tokens))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 28))))
    return texts


def test_lcs_matches_the_dynamic_programme():
    rng = random.Random(7)
    for _ in range(2000):
        a = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        expected = _lcs_table(a, b)[-1][-1] if a and b else 0
        assert lcs_length(a, b) == expected


def test_f_measure_is_rouge_scores_float_bit_for_bit():
    rng = random.Random(3)
    for _ in range(500):
        a = " ".join(rng.choice("ab cd ef gh ij".split()) for _ in range(rng.randint(1, 20)))
        b = " ".join(rng.choice("ab cd ef gh ij".split()) for _ in range(rng.randint(1, 20)))
        assert rouge_l_f(rouge_tokens(a), rouge_tokens(b)) == SCORER.score(a, b)["rougeL"].fmeasure


@pytest.mark.parametrize("seed,vocabulary", [(1, 60), (2, 300), (3, 2000)])
def test_decisions_identical_to_the_naive_loop(seed, vocabulary):
    texts = near_duplicates(seed, 350, vocabulary)
    index = RougeIndex(0.7)
    fast = [index.check_and_add(t)[0] for t in texts]
    assert fast == naive_decisions(texts)
    assert 0 < sum(fast) < len(texts)  # the data really exercises both outcomes


def test_boundary_exactly_at_the_threshold_is_kept():
    # LCS 7 of 10 and 10 tokens: F is 0.7 exactly, which is not "> 0.7".
    old = "a b c d e f g h i j"
    new = "a b c d e f g x y z"
    assert SCORER.score(new, old)["rougeL"].fmeasure == pytest.approx(0.7)
    index = RougeIndex(0.7, [old])
    assert index.check(new)[0] is (SCORER.score(new, old)["rougeL"].fmeasure > 0.7)


def test_min_overlap_agrees_with_the_float_formula():
    for m in range(1, 40):
        for n in range(1, 40):
            need = min_overlap(m, n, 0.7)
            for o in range(1, min(m, n) + 1):
                f = 2 * (o / n) * (o / m) / ((o / n) + (o / m))
                if f > 0.7:
                    assert o >= need
            if need <= min(m, n):
                assert 2 * (need / n) * (need / m) / ((need / n) + (need / m)) > 0.7


def test_texts_with_punctuation_and_case_tokenize_like_rouge_score():
    index = RougeIndex(0.7, ["Write a POEM, about the sea!"])
    assert index.check("write a poem about the sea")[0]
    assert not index.check("Summarize the article in two sentences.")[0]


def test_empty_and_non_latin_texts_never_match():
    index = RougeIndex(0.7, ["", "日本語のテキスト"])
    assert index.check("日本語のテキスト")[0] is False  # no a-z0-9 tokens: F is 0, as in rouge_score
    assert index.check("")[0] is False


def test_long_texts_are_compared_too():
    long_text = " ".join(f"w{i}" for i in range(700))
    index = RougeIndex(0.7, [long_text], max_len=100)
    assert index.check(long_text + " extra")[0]
    assert not index.check("something else entirely")[0]


def test_rebuilds_keep_decisions_exact():
    texts = near_duplicates(11, 450, 150)  # crosses several frequency re-rankings
    index = RougeIndex(0.7)
    assert [index.check_and_add(t)[0] for t in texts] == naive_decisions(texts)
