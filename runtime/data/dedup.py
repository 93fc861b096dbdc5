"""Near-duplicate detection by ROUGE-L, exact and fast, against a run's whole history.

The decision is the one Self-Instruct makes with ``rouge_score``: reject a new instruction when
``RougeScorer(["rougeL"]).score(new, old).fmeasure > threshold`` for any ``old`` in the pool.
Same tokenizer (``rouge_score``'s own), same float formula, so the same decisions; but instead
of a quadratic-time LCS against every earlier instruction, each check

1. asks an inverted index for the few earlier instructions that could pass: LCS is bounded by
   the multiset overlap of the two token lists, so a pair needs at least ``o_min(m, n)`` shared
   tokens, and by the prefix-filtering lemma it then shares one of the first
   ``len - o_min + 1`` tokens of each list under one fixed token order (rarest first);
2. scores the candidates in one call of ``rapidfuzz`` (C++): its normalized Indel similarity
   is ``2 * LCS / (m + n)``, ROUGE-L F in exact arithmetic; and
3. re-checks the few that pass with ``rouge_score``'s own float formula, so the decision is
   bit-for-bit the same.

The candidate index is ours (no library offers set-similarity prefix filtering for this).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Iterable, Sequence

from rapidfuzz import process
from rapidfuzz.distance import Indel, LCSseq
from rouge_score.tokenize import tokenize as _rouge_tokenize

# Until the first re-ranking by frequency, these common words rank lowest, so they sort last
# (out of index prefixes). The order only affects speed, never decisions.
_COMMON = (
    "the a an of to and in for is on with that this be as it are by or from at your you what how "
    "write give make create list describe explain generate find provide following given text sentence "
    "about into can which one two three words word each using use following"
).split()


def rouge_tokens(text: str) -> list[str]:
    """Tokens exactly as ``rouge_score``'s default tokenizer (no stemming) makes them."""
    return _rouge_tokenize(text, None)


def rouge_l_f(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists, bit-for-bit as ``rouge_score`` computes it."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    precision = lcs / len(b)
    recall = lcs / len(a)
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two token lists."""
    return int(LCSseq.similarity(a, b))


@lru_cache(maxsize=None)
def _f_float(o: int, m: int, n: int) -> float:
    precision = o / n
    recall = o / m
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=65536)
def min_overlap(m: int, n: int, threshold: float) -> int:
    """Smallest LCS length whose F (as floats) exceeds ``threshold``; ``min(m, n) + 1`` if none."""
    for o in range(1, min(m, n) + 1):
        if _f_float(o, m, n) > threshold:
            return o
    return min(m, n) + 1


class RougeIndex:
    """The pool of instructions a new one must not nearly repeat.

    :meth:`check` tells whether a text would be rejected; :meth:`add` puts it in the pool.
    Candidates come from an inverted index of each entry's prefix (its rarest tokens, in a
    token order rebuilt by document frequency each time the pool doubles), bucketed by
    position and length so PPJoin's positional bound skips whole buckets. ``max_len`` bounds
    the token count indexed this way; longer texts are compared directly.
    """

    def __init__(self, threshold: float = 0.7, texts: Iterable[str] = (), *, max_len: int = 512) -> None:
        self.threshold = threshold
        self.max_len = max_len
        self._ids: dict[str, int] = {}
        self._rank: dict[int, int] = {}  # token id -> rank; higher ranks sort first (rarer)
        for i, word in enumerate(_COMMON):
            self._rank.setdefault(self._id(word), i - len(_COMMON))  # "the" lowest: sorts last
        self._tokens: list[tuple[int, ...]] = []  # token ids (rapidfuzz compares ints fastest)
        # element -> (position in the entry's prefix, entry length) -> entries
        self._postings: dict[tuple[int, int], dict[tuple[int, int], list[int]]] = {}
        self._long: list[int] = []  # entries longer than max_len: compared directly
        self._prefix_cache: dict[int, int] = {}
        self._df: Counter[int] = Counter()
        self._next_rebuild = 64
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._tokens)

    def _id(self, token: str) -> int:
        ids = self._ids
        found = ids.get(token)
        if found is None:
            found = ids[token] = len(ids)
        return found

    # -- order and prefixes ------------------------------------------------------------------
    def _elements(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """The multiset as (rank, occurrence) pairs, rarest (highest rank) first.

        Tokens without a rank (new, or never indexed) rank above all others: assigning them
        the next ranks later keeps every existing prefix in the same order.
        """
        seen: dict[int, int] = {}
        out = []
        rank = self._rank
        fresh = 10**12
        for token in ids:
            r = rank.get(token)
            if r is None:
                r = fresh + token  # distinct, above every assigned rank
            occurrence = seen.get(token, 0)
            seen[token] = occurrence + 1
            out.append((r, occurrence))
        out.sort(key=lambda e: (-e[0], e[1]))
        return out

    def _prefix_len(self, m: int) -> int:
        """Prefix length that any passing partner must hit (uses the loosest partner length)."""
        length = self._prefix_cache.get(m)
        if length is None:
            need = min(min_overlap(m, n, self.threshold) for n in range(1, self.max_len + 1))
            length = self._prefix_cache[m] = max(0, m - need + 1)
        return length

    def _rebuild(self) -> None:
        """Re-rank tokens by document frequency (rare first) and re-index every entry.

        Any fixed order gives exact results; a frequency order keeps common words out of the
        prefixes, which is what makes the index fast. Rebuilding at each doubling of the pool
        costs O(1) amortized per entry.
        """
        ordered = sorted(self._df, key=lambda t: (-self._df[t], t))
        self._rank = {token: i for i, token in enumerate(ordered)}
        self._postings = {}
        self._long = []
        for entry, ids in enumerate(self._tokens):
            self._index(entry, ids)
        self._next_rebuild = 2 * len(self._tokens)

    def _index(self, entry: int, ids: tuple[int, ...]) -> None:
        m = len(ids)
        if m == 0:
            return  # F against an empty text is 0: it can never match
        if m > self.max_len:
            self._long.append(entry)
            return
        rank = self._rank
        for token in ids:
            if token not in rank:
                rank[token] = len(rank) + 10**9  # new tokens rank above the ranked ones
        postings = self._postings
        for position, element in enumerate(self._elements(ids)[: self._prefix_len(m)]):
            buckets = postings.get(element)
            if buckets is None:
                buckets = postings[element] = {}
            bucket = buckets.get((position, m))
            if bucket is None:
                buckets[(position, m)] = [entry]
            else:
                bucket.append(entry)

    # -- public ------------------------------------------------------------------------------
    def check(self, text: str) -> tuple[bool, float, int | None]:
        """(is_duplicate, best F among the candidates checked, index of the matching entry)."""
        return self._check_ids(self._lookup(rouge_tokens(text)))

    def add(self, text: str) -> None:
        self._add_ids(tuple(self._id(t) for t in rouge_tokens(text)))

    def check_and_add(self, text: str) -> tuple[bool, float, int | None]:
        """Check, and add to the pool when not a duplicate (Self-Instruct's loop body)."""
        tokens = rouge_tokens(text)
        result = self._check_ids(self._lookup(tokens))
        if not result[0]:
            self._add_ids(tuple(self._id(t) for t in tokens))
        return result

    # -- internals ---------------------------------------------------------------------------
    def _lookup(self, tokens: list[str]) -> tuple[int, ...]:
        ids = self._ids
        # An unknown token gets an id no entry holds (it can match nothing in the pool).
        return tuple(ids.get(t, -1 - i) for i, t in enumerate(tokens))

    def _add_ids(self, ids: tuple[int, ...]) -> None:
        entry = len(self._tokens)
        self._tokens.append(ids)
        self._df.update(set(ids))
        if len(self._tokens) >= self._next_rebuild:
            self._rebuild()
        else:
            self._index(entry, ids)

    def _check_ids(self, ids: tuple[int, ...]) -> tuple[bool, float, int | None]:
        m = len(ids)
        if m == 0 or not self._tokens:
            return False, 0.0, None
        threshold = self.threshold
        entries = self._tokens
        if m <= self.max_len:
            # Scan the prefix rarest first. A true match is first found at some prefix position
            # i of the new text and j of the entry, and then shares at most 1 + min(m-i-1, n-j-1)
            # tokens (PPJoin's positional bound); whole (j, n) buckets failing that are skipped.
            # An entry skipped here was either found earlier through a rarer token or cannot match.
            found: set[int] = set()
            postings = self._postings
            for i, element in enumerate(self._elements(ids)[: self._prefix_len(m)]):
                buckets = postings.get(element)
                if not buckets:
                    continue
                left = m - i - 1
                for (j, n), bucket in buckets.items():
                    rest = n - j - 1
                    if 1 + (left if left < rest else rest) >= min_overlap(m, n, threshold):
                        found.update(bucket)
            candidates = sorted(found.union(self._long))
        else:
            candidates = list(range(len(entries)))
        if not candidates:
            return False, 0.0, None
        # One C++ pass scores them all; 2*LCS/(m+n) equals F up to float rounding, so a hair
        # of slack lets every true match through to the exact check below.
        hits = process.extract(ids, [entries[c] for c in candidates], scorer=Indel.normalized_similarity,
                               score_cutoff=max(0.0, threshold - 1e-9), limit=None)
        best, best_entry = 0.0, None
        for _, _, position in sorted(hits, key=lambda hit: hit[2]):  # earliest entry first
            entry = candidates[position]
            other = entries[entry]
            f = _f_float(int(LCSseq.similarity(ids, other)), m, len(other))
            if f > best:
                best, best_entry = f, entry
            if f > threshold:
                return True, f, entry
        return False, best, best_entry
