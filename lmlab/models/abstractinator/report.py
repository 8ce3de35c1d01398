"""The abstractinator's own report (``lmlab report RUN --text ...``): where a run cuts a text into
patches, as a self-contained HTML page.

Each level of the pyramid pools a patch of its input into one code; this module maps every
level's patches back to byte offsets of the text and draws them: a thin bar and an alternating
background per level-1 patch, a thicker coloured bar where a higher-level patch starts.
"""

from __future__ import annotations

import html
from bisect import bisect_right

import torch

# Bar per level (level 1 first): higher levels get thicker, more visible bars.
_BARS = ["1px solid #999", "3px solid #d33", "4px solid #27c", "5px solid #2a2"]
_NAMES = ["thin grey", "thick red", "thicker blue", "thickest green"]


@torch.no_grad()
def patch_boundaries(model, data: bytes) -> list[list[int]]:
    """Per level (bottom first), the sorted byte offsets into ``data`` where a patch starts.

    ``data`` goes through in windows of ``model.block_size`` ids, each ``[eos] + up to
    block_size - 1 bytes``, so every window's first data byte starts a patch at every level.
    """
    n_levels = len(model.cfg.levels)
    starts: list[list[int]] = [[] for _ in range(n_levels)]
    step = model.block_size - 1  # the eos start id takes one position of every window
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for base in range(0, len(data), step):
            chunk = data[base:base + step]
            ids = torch.tensor([[model.eos_id, *chunk]], device=device)
            outs = model.compress_all(ids)
            idx = outs[0].seg[0]  # (T,) the level-1 code of each position (bytes are all valid)
            for level in range(n_levels):
                if level:  # the level-(k+1) code covering each byte: follow the codes up
                    idx = outs[level].seg[0].gather(0, idx)
                new = (idx[1:] != idx[:-1]).nonzero().flatten() + 1  # window positions >= 1
                # Position 0 is the eos start id; window position t holds data byte base + t - 1.
                offs = {base} | {base + int(t) - 1 for t in new}
                starts[level].extend(sorted(offs))
    finally:
        model.train(was_training)
    return starts


def _chars(data: bytes) -> tuple[list[str], list[int]]:
    """``data`` decoded as UTF-8 with errors="replace": the characters and the byte offset where
    each begins (an invalid run becomes one U+FFFD, exactly as ``bytes.decode`` does)."""
    chars: list[str] = []
    offsets: list[int] = []

    def add(text: str, at: int) -> int:
        for ch in text:
            chars.append(ch)
            offsets.append(at)
            at += len(ch.encode("utf-8"))
        return at

    pos = 0
    while pos < len(data):
        try:
            add(data[pos:].decode("utf-8"), pos)
            break
        except UnicodeDecodeError as e:
            add(data[pos:pos + e.start].decode("utf-8"), pos)
            chars.append("\ufffd")
            offsets.append(pos + e.start)
            pos += e.end
    return chars, offsets


def stats(n_bytes: int, boundaries: list[list[int]]) -> list[tuple[int, float]]:
    """Per level: (number of patches, mean bytes per patch)."""
    return [(len(b), n_bytes / len(b) if b else 0.0) for b in boundaries]


def stats_line(n_bytes: int, boundaries: list[list[int]]) -> str:
    """One line, e.g. ``level 1: 40 patches (2.50 bytes/patch); level 2: ...``."""
    return "; ".join(f"level {i}: {n} patches ({m:.2f} bytes/patch)"
                     for i, (n, m) in enumerate(stats(n_bytes, boundaries), 1))


def render_html(data: bytes, boundaries: list[list[int]], title: str = "") -> str:
    """A self-contained page: the text with patch starts marked, a legend and per-level stats.

    Each patch start opens ``<span class="patch L1 [L2 ...]">`` (L<k> for every level starting
    there). A start inside a multi-byte character is drawn before that character, so markers
    never split one (two starts in the same character share one marker).
    """
    chars, offsets = _chars(data)
    # Map each start to the character containing that byte: the highest level starting there wins.
    top: dict[int, int] = {}
    for level, offs in enumerate(boundaries, 1):
        for b in offs:
            if 0 <= b < len(data):
                c = bisect_right(offsets, b) - 1
                top[c] = max(top.get(c, 0), level)
    parts: list[str] = []
    n_open = 0
    for c, ch in enumerate(chars):
        if c in top:
            if n_open:
                parts.append("</span>")
            classes = " ".join(f"L{k}" for k in range(1, top[c] + 1))
            alt = " alt" if n_open % 2 else ""
            parts.append(f'<span class="patch {classes}{alt}" title="byte {offsets[c]}">')
            n_open += 1
        parts.append(html.escape(ch, quote=False))
    if n_open:
        parts.append("</span>")
    css = "\n".join(f".patch.L{k} {{ border-left: {bar}; }}" for k, bar in enumerate(_BARS, 1))
    legend = "".join(f'<li><span class="swatch" style="border-left: {_BARS[k]}"></span>'
                     f"level {k + 1} patch start ({_NAMES[k]} bar)</li>" for k in range(len(boundaries)))
    rows = "".join(f"<tr><td>{i}</td><td>{n}</td><td>{m:.2f}</td></tr>"
                   for i, (n, m) in enumerate(stats(len(data), boundaries), 1))
    name = html.escape(title or "patches")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.text {{ font-family: monospace; white-space: pre-wrap; line-height: 1.8; border: 1px solid #ccc; padding: 1em; }}
.patch {{ background: #fff; }}
.patch.alt {{ background: #e8eefa; }}
{css}
.swatch {{ display: inline-block; width: 1.5em; height: 1em; background: #e8eefa; margin-right: .5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .2em .8em; text-align: right; }}
</style></head><body>
<h1>{name}</h1>
<ul class="legend">{legend}<li>alternating background: consecutive level-1 patches</li></ul>
<table class="stats"><tr><th>level</th><th>patches</th><th>mean bytes/patch</th></tr>{rows}</table>
<p>{len(data)} bytes</p>
<div class="text">{"".join(parts)}</div>
</body></html>
"""
