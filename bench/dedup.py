"""Dedup benchmark: the fast ROUGE-L index against Self-Instruct's naive rouge_score loop.

Both check the same stream of instructions against the growing pool of those kept (the
whole history), and must make identical keep/reject decisions. Prints the time of each and
the ratio (target: the index at least 20x faster).

The naive loop is quadratic (about 50 million rouge_score calls for 10,000 instructions, most
of an hour here), so by default it runs on an evenly spaced sample of the stream: each sampled
instruction is checked against the exact pool it meets in the stream, and the total time is
the sampled time per comparison times the number of comparisons the full loop would make.
``--full`` runs the whole naive loop instead.

    python bench/dedup.py [--n 10000] [--sample 200] [--full]
"""

from __future__ import annotations

import argparse
import random
import time

from rouge_score import rouge_scorer

from isheep.runtime.data.dedup import RougeIndex

VERBS = ("write explain describe summarize list give compare suggest create translate classify rewrite outline "
         "identify name find calculate convert generate design propose evaluate recommend edit correct define "
         "predict estimate analyze plan draft answer tell choose rank sort categorize detect paraphrase").split()
TOPICS = ("ocean river mountain forest desert city village school hospital library museum garden kitchen "
          "restaurant airport train bicycle car computer phone internet email password database algorithm "
          "function variable loop recipe bread cake coffee tea fruit vegetable diet exercise sleep stress "
          "meeting interview resume career salary budget invoice tax loan investment market customer product "
          "brand advertisement slogan poem story novel essay letter speech debate argument opinion fact "
          "history war election government law contract policy climate weather energy battery solar wind "
          "planet star moon galaxy atom molecule cell gene virus vaccine medicine doctor patient teacher "
          "student exam homework vacation hotel passport language grammar sentence paragraph word verb noun "
          "friend family wedding birthday gift holiday festival game team sport football tennis chess").split()
SHAPES = (
    "{v} a short {a} about the {b} for a {c} audience",
    "{v} three ways to improve the {a} of a {b}",
    "{v} the difference between a {a} and a {b}",
    "{v} why the {a} is important for the {b} and the {c}",
    "{v} the following {a} in one sentence",
    "{v} a list of five {a} related to {b}",
    "{v} how a {a} affects the {b} of a {c}",
    "{v} a plan for a {a} that includes a {b} and a {c}",
    "{v} the main idea of the {a} about {b}",
    "{v} whether the {a} is a {b} or a {c}",
    "{v} what makes a good {a}",
    "{v} the pros and cons of using a {a} instead of a {b}",
    "{v} a {c} {a} for someone who loves {b}",
    "{v} each {a} in the list by its {b}",
    "{v} a dialogue between a {a} and a {b}",
    "{v} common mistakes people make with a {a}",
)
AUDIENCE = "young curious busy skeptical technical general local international".split()


def instructions(n: int, seed: int = 0) -> list[str]:
    """Instruction-like texts with a realistic share of near-duplicates (paraphrases)."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.15:
            words = rng.choice(out).split()
            for _ in range(rng.randint(1, 3)):
                roll = rng.random()
                if roll < 0.4:
                    words[rng.randrange(len(words))] = rng.choice(TOPICS)
                elif roll < 0.7:
                    words.insert(rng.randrange(len(words) + 1), rng.choice(AUDIENCE))
                elif len(words) > 4:
                    del words[rng.randrange(len(words))]
            out.append(" ".join(words))
            continue
        shape = rng.choice(SHAPES)
        text = shape.format(v=rng.choice(VERBS).capitalize(), a=rng.choice(TOPICS), b=rng.choice(TOPICS),
                            c=rng.choice(AUDIENCE + TOPICS))
        tail = rng.random()
        if tail < 0.35:
            text += f", mentioning the {rng.choice(TOPICS)} and the {rng.choice(TOPICS)}"
        elif tail < 0.7:
            text += f" in {rng.choice(('two', 'three', 'four', 'five', 'ten'))} {rng.choice(TOPICS)}s" \
                    f" for a {rng.choice(AUDIENCE)} {rng.choice(TOPICS)}"
        out.append(text + ".")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200, help="naive probes when not --full")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--full", action="store_true", help="run the whole naive loop (slow)")
    args = parser.parse_args()

    texts = instructions(args.n)
    started = time.perf_counter()
    index = RougeIndex(args.threshold)
    fast = [index.check_and_add(t)[0] for t in texts]
    fast_s = time.perf_counter() - started
    print(f"index: {args.n} instructions, {sum(fast)} rejected as near-duplicates, {fast_s:.2f} s")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_sizes: list[int] = []
    kept = 0
    for duplicate in fast:
        pool_sizes.append(kept)
        kept += not duplicate
    # A lower bound of the naive loop's work: a new instruction is compared with the whole
    # pool; a duplicate is counted as free (the loop below stops at its first match).
    total_pairs = sum(size for size, duplicate in zip(pool_sizes, fast) if not duplicate)

    if args.full:
        started = time.perf_counter()
        naive, naive_pool = [], []
        for text in texts:
            duplicate = any(scorer.score(text, old)["rougeL"].fmeasure > args.threshold for old in naive_pool)
            naive.append(duplicate)
            if not duplicate:
                naive_pool.append(text)
        naive_s = time.perf_counter() - started
        mismatches = sum(a != b for a, b in zip(fast, naive))
        print(f"naive loop (full): {naive_s:.1f} s; decisions differing: {mismatches} of {args.n}")
    else:
        step = max(1, args.n // args.sample)
        probes = list(range(step - 1, args.n, step))
        pairs, mismatches, sampled_s = 0, 0, 0.0
        for i in probes:
            # The pool this instruction meets (the same for both loops when all earlier
            # decisions agree, which --full checks end to end).
            kept_before = [t for t, d in zip(texts[:i], fast[:i]) if not d]
            started = time.perf_counter()
            duplicate = False
            for old in kept_before:
                pairs += 1
                if scorer.score(texts[i], old)["rougeL"].fmeasure > args.threshold:
                    duplicate = True
                    break
            sampled_s += time.perf_counter() - started
            mismatches += duplicate != fast[i]
        naive_s = sampled_s / max(1, pairs) * total_pairs
        print(f"naive loop, estimated: {naive_s:.0f} s = {total_pairs:,} comparisons x "
              f"{sampled_s / max(1, pairs) * 1e6:.1f} us (timed on {pairs:,} comparisons of {len(probes)} "
              f"sampled instructions); sampled decisions differing: {mismatches} of {len(probes)}")
    print(f"ratio naive / index: {naive_s / fast_s:.0f}x (target: at least 20x, identical decisions)")
    if mismatches:
        raise SystemExit("DECISIONS DIFFER")


if __name__ == "__main__":
    main()
