"""HF Llama interop against ``transformers.LlamaForCausalLM`` with random weights, offline: logits
(fp32, 1e-5) with and without grouped-query attention and tied embeddings, greedy tokens, the
export read back by ``from_pretrained``, the tokenizer out byte for byte, ``lmlab eval`` against
lm-eval's ``hf`` model, and the configs outside the mapping refused by key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab import rundir
from lmlab.cli import main
from lmlab.config import DecodeSettings
from lmlab.errors import LmlabError
from lmlab.generate.decode import generate_ids
from lmlab.interop.hf import export_hf, import_hf, load_hf
from lmlab.interop.llama import llama_model_config
from lmlab.runs import load_run

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

_H = __import__("runpy").run_path(str(Path(__file__).with_name("llama_folder.py")))
TEXT, _llama_folder = _H["TEXT"], _H["llama_folder"]


CASES = [(4, False, {}), (2, True, {}), (1, False, {"attention_bias": True, "mlp_bias": True})]
IDS = ["mha-untied", "gqa-tied", "mqa-biases"]


@pytest.mark.parametrize(("kv", "tied", "extra"), CASES, ids=IDS)
def test_logits_match_llama_for_causal_lm(tmp_path: Path, kv: int, tied: bool, extra: dict) -> None:
    folder = _llama_folder(tmp_path / "hf", kv, tied, **extra)
    ref = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    model, tok, model_dict = load_hf(folder)
    assert model_dict["n_kv_head"] == (None if kv == 4 else kv) and model_dict["tie_weights"] is tied
    assert model.cfg.rope_base == 500.0 and model.cfg.norm_eps == 1e-5 and model.cfg.d_ff == 96
    ids = torch.tensor([tok.encode(TEXT[:200])[:60]])
    with torch.no_grad():
        want = ref(ids).logits
        got = model(ids).logits
    assert (got - want).abs().max().item() < 1e-5
    # the KV cache holds n_kv_head heads and decodes to the same logits
    state = model.init_state(1)
    assert state.caches[0].k.shape[1] == kv
    _, step_logits, _ = model.step_hidden(ids[:, :30], state)
    assert (step_logits - want[:, 29]).abs().max().item() < 1e-5


@pytest.mark.parametrize(("kv", "tied"), [(4, True), (2, False)])
def test_greedy_generation_gives_the_same_tokens(tmp_path: Path, kv: int, tied: bool) -> None:
    folder = _llama_folder(tmp_path / "hf", kv, tied)
    ref = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    run = import_hf(folder, tmp_path / "run")
    model, tok, _, _ = load_run(run)
    prompt = tok.encode("the quick brown fox")
    ours = generate_ids(model, [prompt], DecodeSettings(max_new_tokens=12, temperature=0.0, stop_on_eos=False),
                        tok.eos_id)[0]
    start = torch.tensor([[tok.eos_id, *prompt]])  # lmlab starts every document after an end of text
    theirs = ref.generate(start, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0,
                          min_new_tokens=12)[0, start.size(1):].tolist()
    assert ours == theirs


def test_import_export_round_trip_loads_in_transformers(tmp_path: Path) -> None:
    folder = _llama_folder(tmp_path / "hf", 2, True, pad_vocab=5)  # a padded embedding table
    assert main(["import-hf", str(folder), str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    model, tok, cfg, _ = load_run(run)
    assert tok.backend == "hf" and tok.vocab_size == model.cfg.vocab_size and cfg.model.n_kv_head == 2
    assert (tok.eos_id, tok.bos_id, tok.unk_id) == (2, 1, 0)
    assert main(["export-hf", str(run), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tokenizer goes back out unchanged
        assert (out / name).read_bytes() == (folder / name).read_bytes()
    again = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ref = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([tok.encode(TEXT[:120])])
    with torch.no_grad():
        assert (again(ids).logits - ref(ids).logits).abs().max().item() < 1e-6
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok(TEXT[:120], add_special_tokens=False)["input_ids"] == ids[0].tolist()


def test_export_of_a_trained_swiglu_run_picks_llama(tmp_path: Path) -> None:
    """An lmlab-built Llama-shaped model (GQA, untied) exports as Llama and reads back equal."""
    from lmlab.configure import build_model_config
    from lmlab.registry import build_model

    torch.manual_seed(1)
    model = build_model(build_model_config({"family": "transformer", "preset": "tiny", "vocab_size": 90,
                                            "mlp": "swiglu", "n_head": 4, "n_kv_head": 2, "tie_weights": False}))
    out, kind = export_hf(model.eval(), tmp_path / "hf")
    assert kind == "llama"
    ref = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 90, (2, 40))
    with torch.no_grad():
        assert (model(ids).logits - ref(ids).logits).abs().max().item() < 1e-5


def test_a_model_neither_format_fits_is_refused_by_field(tmp_path: Path) -> None:
    from lmlab.configure import build_model_config
    from lmlab.registry import build_model

    model = build_model(build_model_config({"family": "transformer", "preset": "tiny", "vocab_size": 90,
                                            "pos_encoding": "alibi"}))
    with pytest.raises(LmlabError, match=r"cannot export: llama: model.pos_encoding='alibi'.*\| gpt2:"):
        export_hf(model, tmp_path / "hf")


@pytest.mark.parametrize(("key", "value", "match"), [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling = .*'yarn'"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling = .*'linear'"),
    ("hidden_act", "gelu", "hidden_act = 'gelu'"),
    ("head_dim", 32, "head_dim = 32 is not hidden_size / num_attention_heads"),
    ("attention_dropout", 0.1, "attention_dropout = 0.1"),
    ("model_type", "mistral", "model_type = 'mistral'"),
])
def test_a_config_outside_the_mapping_is_refused_naming_the_key(key: str, value, match: str) -> None:
    base = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
            "intermediate_size": 96, "vocab_size": 100}
    with pytest.raises(LmlabError, match=match):
        llama_model_config({**base, key: value})
    assert llama_model_config({**base, "rope_scaling": {"rope_type": "default"}})["rope_base"] == 10000.0


def test_unknown_model_type_and_cli_alias(tmp_path: Path, capsys) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model_type = 'mistral' is not supported; lmlab reads gpt2 and llama folders" in err
    assert not rundir.has_checkpoint(tmp_path / "run")


def test_lmlab_eval_scores_as_lm_evals_hf_model(tmp_path: Path) -> None:
    hf_lm = pytest.importorskip("lm_eval.models.huggingface")
    # deferred: lm-eval is optional (the eval extra); the test skips without it
    from lm_eval.api.instance import Instance

    from lmlab.eval.runner import load_checkpoint
    from lmlab.eval.scoring import Scorer

    folder = _llama_folder(tmp_path / "hf", 2, True)
    ref = hf_lm.HFLM(pretrained=str(folder), device="cpu", batch_size=4)
    model, tok, info = load_checkpoint(folder)
    assert info["format"] == "hf-llama"
    scorer = Scorer(model, tok, always_prefix=False)
    words = TEXT.split()
    reqs = [(" ".join(words[:n]), cont) for n in (2, 10, 30) for cont in (" the lazy dog", " again")]
    reqs.append(("", "the quick brown fox"))  # an empty context: both score after the prefix token
    want = ref.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)])
    got = scorer.loglikelihood(reqs)
    for (ll, greedy), (ref_ll, ref_greedy), r in zip(got, want, reqs):
        assert ll == pytest.approx(ref_ll, abs=2e-4), r
        assert greedy == ref_greedy, r


@pytest.mark.parametrize("kv", [None, 2, 1])
def test_size_and_flops_count_the_key_value_heads(kv) -> None:
    """A Llama-shaped model's parameter estimate counts the smaller k/v projections exactly (the
    memory check and MFU read it), and fewer k/v heads are fewer FLOPs."""
    from lmlab.configure import build_model_config
    from lmlab.registry import build_model

    cfg = build_model_config({"family": "transformer", "n_layer": 3, "n_head": 8, "n_kv_head": kv, "d_model": 128,
                              "mlp": "swiglu", "vocab_size": 500, "tie_weights": False, "block_size": 64})
    with torch.device("meta"):
        real = sum(p.numel() for p in build_model(cfg).parameters())
    assert cfg.size_estimate(64)[0] - real == 2 * 128 * 3  # the estimate allows 4 d of norm weights per layer, RMSNorm has 2 d
    full = cfg.model_copy(update={"n_kv_head": None})
    assert (cfg.flops_per_token(64) < full.flops_per_token(64)) == (kv not in (None, 8))


def test_export_to_a_named_format_the_model_does_not_fit_is_refused(tmp_path: Path) -> None:
    from lmlab.configure import build_model_config
    from lmlab.registry import build_model

    model = build_model(build_model_config({"family": "transformer", "preset": "tiny", "vocab_size": 90,
                                            "mlp": "swiglu", "n_head": 2, "n_kv_head": 1}))
    with pytest.raises(LmlabError, match=r"cannot export to GPT-2: model.pos_encoding='rope'.*model.n_kv_head=1"):
        export_hf(model, tmp_path / "hf", to="gpt2")
    assert not (tmp_path / "hf").exists()
