"""Rotary embeddings: eager (complex) and compiled (real) paths agree; scores depend on distance only."""

from __future__ import annotations

import torch

from lmlab.models.common.positions import apply_rope, rope_cache


def test_real_and_complex_paths_agree(monkeypatch):
    x = torch.randn(2, 7, 2, 3, 16)
    table = rope_cache(16, 7)[:, None, None]
    eager = apply_rope(x, table)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(apply_rope(x, table), eager, atol=1e-6, rtol=1e-6)


def test_rotation_is_relative_and_norm_preserving():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    table = rope_cache(16, 40)
    rq = lambda p: apply_rope(q[None], table[p : p + 1])[0]  # noqa: E731
    rk = lambda p: apply_rope(k[None], table[p : p + 1])[0]  # noqa: E731
    torch.testing.assert_close(rq(3) @ rk(1), rq(30) @ rk(28), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rq(3) @ rk(1), rq(3) @ rk(2))
    torch.testing.assert_close(rq(17).norm(), q.norm())
    torch.testing.assert_close(rq(0), q)
