"""Python API: ``lmlab.train(config, **overrides)``, ``lmlab.prepare(config, **overrides)`` and
``lmlab.load(run_dir).generate(...)``."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from lmlab.config import DecodeSettings, RunConfig
from lmlab.configure import deep_merge, load_config
from lmlab.errors import LmlabError
from lmlab.eval.runner import evaluate as run_eval
from lmlab.generate import complete
from lmlab.generate.decode import generate_ids
from lmlab.registry import FAMILIES, generation_option_owners
from lmlab.runs import load_run
from lmlab.training.loop import train as run_training
from lmlab.training.prepare import PrepareReport
from lmlab.training.prepare import prepare as run_prepare


def overrides_to_dict(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 1e-3, "model__n_layer": 2, "data": {...}}`` -> a nested config dict."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        path = key.replace("__", ".").split(".")
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            node[path[-1]].update(value)
        else:
            node[path[-1]] = value
    return out


def train(config: str | Path | dict | RunConfig | None = None, **overrides: Any) -> Path:
    """Train a run and return its run dir.

    ``config`` is a YAML/JSON path, a dict, a :class:`RunConfig` or None (defaults). Overrides use
    dotted or double-underscore keys, or whole sections: ``train(cfg, **{"train.max_steps": 50})``,
    ``train(cfg, train__max_steps=50)``, ``train(cfg, train={"max_steps": 50})``.
    """
    return run_training(_config(config, overrides))


def prepare(config: str | Path | dict | RunConfig | None = None, **overrides: Any) -> PrepareReport:
    """Build (or reuse) a config's tokenizer and token cache without training (``lmlab prepare``);
    ``train`` on the same config then reuses both. Arguments as :func:`train`'s; returns what was
    built or reused (``report.text()`` is what the command prints)."""
    return run_prepare(_config(config, overrides))


def _config(config: str | Path | dict | RunConfig | None, overrides: dict[str, Any]) -> RunConfig:
    extra = overrides_to_dict(overrides)
    if isinstance(config, (RunConfig, dict)):
        raw = config.to_dict() if isinstance(config, RunConfig) else config
        return load_config(raw=deep_merge(raw, extra))
    return load_config(config, raw=extra or None)


class LoadedModel:
    """A trained model with its tokenizer and config, ready to generate."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", snapshot: str = "latest"):
        self.model, self.tokenizer, self.config, self.snapshot = load_run(run_dir, device, snapshot)
        self.run_dir = Path(run_dir)

    def settings(self, **kw: Any) -> DecodeSettings:
        """The run's sample defaults with ``kw`` applied (``greedy=True`` means temperature 0)."""
        if kw.pop("greedy", False):
            kw["temperature"] = 0.0
        base = self.config.sample.model_dump(exclude={"prompts"})
        try:
            return DecodeSettings(**{**base, **kw})
        except ValidationError as e:
            err = e.errors()[0]
            raise LmlabError(f"{'.'.join(map(str, err['loc']))} = {err.get('input')!r}: {err['msg']}") from None

    def _family_options(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Pop the decoding options a family declares (``generation_flags``: apelr's force_state,
        freeze_planner, ...) out of ``settings``; one this run's family does not take is an error
        naming the families that do."""
        owners = generation_option_owners()
        opts = {k: settings.pop(k) for k in list(settings) if k in owners}
        opts = {k: v for k, v in opts.items() if v is not None}
        foreign = sorted(k for k in opts if k not in self.model.generation_options)
        if foreign:
            fams = sorted({f for k in foreign for f in owners[k]})
            raise LmlabError(f"{', '.join(foreign)}: decoding options of the {', '.join(fams)} family, but this run "
                             f"is {self.config.model.family}; drop them")
        return opts

    @contextmanager
    def _options(self, opts: dict[str, Any]):
        """The family's decoding options for one call, reset after it."""
        if not self.model.generation_options:
            yield
            return
        try:
            self.model.set_generation_options(**opts)
        except ValueError as e:
            raise LmlabError(str(e)) from None
        try:
            yield
        finally:
            self.model.set_generation_options()

    def generate_batch(self, prompts: list[str], **settings: Any) -> list[str]:
        """Continue each prompt; returns prompt + generated text for each. ``settings``: the
        decoding knobs (:meth:`settings`) and the options the run's family declares (its
        ``generation_flags``, e.g. ``force_state=2``)."""
        opts = self._family_options(settings)
        with self._options(opts):
            return complete(self.model, self.tokenizer, prompts, self.settings(**settings))

    def generate_with_plan(self, prompt: str, lookahead_steps: int = 0, **settings: Any) -> tuple[str, list[dict]]:
        """Continue one prompt with a planner family and report, per generated token: its text,
        the active plan state (the gate's argmax), the belief, and ``lookahead_steps`` forecasts
        of the belief (transition applied 1..n times)."""
        opts = self._family_options(settings)
        if "record" not in self.model.generation_options:
            have = sorted(n for n, (_, m) in FAMILIES.items() if "record" in m.generation_options)
            raise LmlabError(f"the {self.config.model.family} family has no plan to report ({', '.join(have)} "
                             "have one)")
        s = self.settings(**settings)
        ids = self.tokenizer.encode(prompt, strict=True)
        with self._options({**opts, "record": True, "lookahead_steps": lookahead_steps}):
            new = generate_ids(self.model, [ids], s, self.tokenizer.eos_id)[0]
            history = self.model.recorded_plan()
        plan = [{"token": self.tokenizer.decode([tok]), **rec} for tok, rec in zip(new, history)]
        text = prompt + self.tokenizer.decode(new)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), plan

    def generate(self, prompt: str, **settings: Any) -> str:
        """Continue one prompt (see :meth:`settings` for the knobs). Unset knobs come from the
        run's ``sample`` section (lmlab's defaults: ``max_new_tokens`` 200, ``temperature`` 0.8,
        ``top_k`` 50, ``top_p`` 1.0); ``LM.generate`` starts from seed 002's instead."""
        return self.generate_batch([prompt], **settings)[0]

    @torch.no_grad()
    def log_probs(self, text: str) -> torch.Tensor:
        """log p(token_t | tokens_<t) of ``text`` after an EOS start token. (T,)"""
        ids = torch.tensor([[self.tokenizer.eos_id, *self.tokenizer.encode(text, strict=True)]])
        return self.model.log_probs(ids.to(next(self.model.parameters()).device))[0]


def load(run_dir: str | Path, device: str = "cpu", snapshot: str = "latest") -> LoadedModel:
    """Load a run dir's latest whole snapshot (``snapshot="best"``: its best-validation one)."""
    return LoadedModel(run_dir, device, snapshot)


def evaluate(checkpoints: str | Path | list[str | Path], tasks: str | list[str], **kw: Any) -> dict[str, Any]:
    """``lmlab eval`` from Python: the report dict (``runs``: per-checkpoint metrics, ``table``:
    the markdown table). Keywords as :func:`lmlab.eval.runner.evaluate` (data_dir, max_examples,
    max_input_len, batch_size, stride, output, device)."""
    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    kw.setdefault("log", lambda line: None)
    return run_eval([str(p) for p in paths], tasks, **kw)
