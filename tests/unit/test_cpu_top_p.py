"""The managed CPU server's top-p filter against vLLM's own, on the same logits.

Every row must come out as vLLM's sort leaves it: the same logits kept, the rest at -inf, so
the sampled distribution is vLLM's. Two differences are allowed. Rows without top-p or top-k,
which vLLM's sort also touches when another row of the batch has top-p: it masks tokens whose
probability is already exactly zero; those keep their logit here, and their probability stays
zero. And a row whose nucleus edge is a coincidence of rounding: a token whose mass above it is
within 1e-6 of p (computed exactly) may fall either side, as it may between two float32 sums.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch  # noqa: E402

from isheep.runtime.serving.cpu_top_p import ENV, top_k_top_p  # noqa: E402

VOCAB = 49_152  # the embedded model's


def vllm_filter(logits, k, p):
    return apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)


def rows(batch: int, seed: int, vocab: int = VOCAB):
    """Logits from peaked to flat: nuclei from one token to most of the vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.3, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0]).repeat(batch // 8 + 1)[:batch]
    return torch.randn(batch, vocab, generator=gen) * scales.unsqueeze(1)


def on_the_edge(row, k: int | None, p: float) -> bool:
    """Does a token's mass above it lie within 1e-6 of p, in float64 (after the row's top-k)?"""
    ordered = row.double().sort(descending=True).values[:k]
    probs = torch.softmax(ordered, -1)
    return p < 1 and bool(((probs.cumsum(0) - probs - p).abs() < 1e-6).any())


def assert_same(mine, theirs, logits, k, p):
    mismatched = [r for r in range(len(logits))
                  if not torch.equal(torch.softmax(mine[r], -1), torch.softmax(theirs[r], -1))]
    edge = [r for r in mismatched if on_the_edge(logits[r], None if k is None else int(k[r]), float(p[r]))]
    assert mismatched == edge and len(edge) <= 1, (mismatched, edge)
    both = torch.isfinite(theirs) & torch.isfinite(mine)
    assert torch.equal(mine[both], theirs[both])  # kept logits unchanged


@pytest.mark.parametrize("windows", [(256, 4096), (8, 64), (64,)])
@pytest.mark.parametrize("with_k", [False, True])
def test_the_tokens_kept_are_vllms_on_every_kind_of_row(windows, with_k):
    batch = 48
    logits = rows(batch, seed=len(windows) + with_k)
    p = torch.tensor([0.95, 0.9, 1.0, 0.5, 0.99, 0.7]).repeat(batch // 6)
    k = torch.tensor([VOCAB, VOCAB, 50, 300, VOCAB, 5000, 7, VOCAB], dtype=torch.int32).repeat(batch // 8)
    k = k if with_k else None
    used: list[int] = []

    def fallback(logits_, k_, p_):
        used.append(logits_.shape[0])
        return vllm_filter(logits_, k_, p_)

    mine = top_k_top_p(logits.clone(), k, p, fallback, windows)
    assert_same(mine, vllm_filter(logits.clone(), None if k is None else k.clone(), p.clone()), logits, k, p)
    # The flat rows' nuclei are wider than any window: they, and only rows like them, went to the sort.
    assert used and used[0] < batch


def test_ties_at_the_top_k_edge_and_at_the_window_edge_go_to_vllms_sort():
    logits = torch.zeros(4, 1000)
    logits[:, :3] = torch.tensor([5.0, 4.0, 3.0])  # then 997 equal logits: the 4th largest is tied many times
    k = torch.tensor([4, 1000, 2, 1000], dtype=torch.int32)
    p = torch.tensor([1.0, 0.999, 0.9, 0.5])
    mine = top_k_top_p(logits.clone(), k, p, vllm_filter, windows=(16,))
    theirs = vllm_filter(logits.clone(), k.clone(), p.clone())
    assert_same(mine, theirs, logits, k, p)
    assert torch.isfinite(mine[0]).sum() == 1000  # vLLM keeps every logit equal to the k-th


def test_top_k_alone_and_no_filter_are_vllms_paths():
    logits = rows(16, seed=7)
    k = torch.full((16,), 20, dtype=torch.int32)
    assert torch.equal(top_k_top_p(logits.clone(), k, None, vllm_filter), vllm_filter(logits.clone(), k, None))
    same = logits.clone()
    assert torch.equal(top_k_top_p(same, None, torch.ones(16), vllm_filter), logits)


@pytest.mark.slow  # two interpreters importing vLLM
def test_the_plugin_patches_vllms_sampler_only_when_asked():
    # vLLM finds the plugin through the installed entry point, and it does nothing without the variable.
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert names.get("isheep_cpu_top_p") == "isheep.runtime.serving.cpu_top_p:register"
    probe = ("from vllm.plugins import load_general_plugins; load_general_plugins(); "
             "from vllm.v1.sample.ops import topk_topp_sampler as ops; "
             "print(getattr(ops.apply_top_k_top_p, 'isheep_window', False))")
    for value, expected in (("window", "True"), (None, "False")):
        env = {key: val for key, val in os.environ.items() if key != ENV}
        if value:
            env[ENV] = value
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == expected, done.stderr[-2000:]
