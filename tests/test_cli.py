"""End-to-end CLI: train, sample, resume, and every bad input of the issue (one line, exit 2)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def trained_run(corpus_dir, tmp_path_factory, make_raw):
    """One tiny char-level run shared by the tests that only read it."""
    import lmlab

    return lmlab.train(make_raw(corpus_dir, tmp_path_factory.mktemp("shared") / "run"))


def test_train_then_sample(tiny_config, run_cli):
    path, raw, run = tiny_config(train={"max_steps": 30})
    proc = run_cli("train", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "--- sample 1 ---" in proc.stdout
    assert "lmlab: starting: transformer (" in proc.stdout and "tokenizer char" in proc.stdout
    out = run_cli("sample", "--checkpoint", str(run), "--prompt", "The ", "--prompt", "A longer prompt",
                  "--max-new-tokens", "12", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("--- sample") == 2 and "A longer prompt" in out.stdout
    again = run_cli("sample", "--checkpoint", str(run), "--prompt", "The ", "--prompt", "A longer prompt",
                    "--max-new-tokens", "12", "--seed", "1")
    assert again.stdout == out.stdout
    greedy = run_cli("sample", "--checkpoint", str(run), "--prompt", "The ", "--greedy",
                     "--num-samples", "2", "--max-new-tokens", "10")
    first, second = [b.split("\n", 1)[1] for b in greedy.stdout.split("--- sample ")[1:]]
    assert first == second


def test_resume_flag_continues_with_more_steps(tiny_config, run_cli):
    path, raw, run = tiny_config()
    assert run_cli("train", "--config", str(path)).returncode == 0
    proc = run_cli("train", "--resume", str(run), "--set", "train.max_steps=16")
    assert proc.returncode == 0, proc.stderr
    assert f"lmlab: resuming {run / 'checkpoints' / 'current'} at step 12" in proc.stdout
    assert json.loads((run / "checkpoints/current/meta.json").read_text())["step"] == 16


def test_unknown_key_and_wrong_type(tiny_config, run_cli, one_line_error):
    path, raw, run = tiny_config()
    one_line_error(run_cli("train", "--config", str(path), "--set", "train.batchsize=3"),
                    "train.batchsize", "did you mean 'batch_size'")
    one_line_error(run_cli("train", "--config", str(path), "--set", "model.d_model=big"),
                    "model.d_model = 'big'", "valid integer")
    assert not run.exists()


def test_missing_and_empty_corpus(tiny_config, run_cli, tmp_path, one_line_error):
    path, _, _ = tiny_config()
    one_line_error(run_cli("train", "--config", str(path), "--set",
                            f"data.sources=[{{type: text, path: {tmp_path / 'nope'}}}]"),
                    "no data source could be read", "data.sources[0]", "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("   \n\n")
    one_line_error(run_cli("train", "--config", str(path), "--set",
                            f"data.sources=[{{type: text, path: {empty}}}]"), "corpus is empty")


def test_non_utf8_file_char_reports_byte_accepts(tiny_config, run_cli, tmp_path, corpus_dir, one_line_error):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("caf\xe9 au lait.\n\n" * 3000).encode("latin-1"))  # several documents
    path, raw, run = tiny_config()
    only = f"data.sources=[{{type: text, path: {latin}}}]"
    one_line_error(run_cli("train", "--config", str(path), "--set", only), "latin1.txt", "not UTF-8",
                    "tokenizer.type: byte")
    ok = run_cli("train", "--config", str(path), "--set", only, "--set", "tokenizer.type=byte")
    assert ok.returncode == 0, ok.stderr
    # With another readable source, the bad one is skipped with a warning (the failure policy).
    both = f"data.sources=[{{type: text, path: {corpus_dir}}}, {{type: text, path: {latin}}}]"
    mixed = run_cli("train", "--config", str(path), "--set", both, "--set", f"train.out_dir={tmp_path / 'm'}")
    assert mixed.returncode == 0, mixed.stderr
    assert "warning: skipping data.sources[1]" in mixed.stderr and "not UTF-8" in mixed.stderr


def test_resume_without_checkpoint(run_cli, tmp_path, one_line_error):
    one_line_error(run_cli("train", "--resume", str(tmp_path)), "no checkpoint")


def test_checkpoint_of_another_vocabulary(tiny_config, run_cli, one_line_error):
    path, raw, run = tiny_config()
    assert run_cli("train", "--config", str(path)).returncode == 0
    one_line_error(run_cli("train", "--config", str(path), "--set", "tokenizer.type=byte"),
                    "tokenizer.type = 'char'", "'byte'")
    # A tokenizer from another run dropped into this one: sampling refuses the mismatch.
    vocab = run / "tokenizer" / "vocab.json"
    chars = json.loads(vocab.read_text())
    vocab.write_text(json.dumps(chars[:-5] if isinstance(chars, list) else chars))
    one_line_error(run_cli("sample", "--checkpoint", str(run), "--prompt", "a"), "tokenizer has", "expects")


def test_prompt_with_unseen_characters(trained_run, run_cli, one_line_error):
    run = trained_run
    one_line_error(run_cli("sample", "--checkpoint", str(run), "--prompt", "naïve ☃"),
                    "never saw", "'☃'")


def test_max_new_tokens_past_context_slides(trained_run, run_cli):
    run = trained_run
    out = run_cli("sample", "--checkpoint", str(run), "--prompt", "The ", "--max-new-tokens", "100",
                  "--no-stop-on-eos")
    assert out.returncode == 0, out.stderr
    assert "exceeds the context (32); the window slides" in out.stderr
    text = out.stdout.split("--- sample 1 ---\n", 1)[1].rstrip("\n")
    # 100 new ids, well past the 32-token context (ids like EOS decode to nothing, so <= not ==).
    assert len("The ") + 32 < len(text) <= len("The ") + 100


def test_bad_sampling_value(trained_run, run_cli, one_line_error):
    run = trained_run
    one_line_error(run_cli("sample", "--checkpoint", str(run), "--top-p", "1.5"), "top_p = 1.5")


def test_resume_a_run_dir_whose_name_parses_as_a_number(tiny_config, run_cli, tmp_path):
    path, raw, run = tiny_config(train={"out_dir": "2024"})
    assert run_cli("train", "--config", str(path), cwd=tmp_path).returncode == 0
    proc = run_cli("train", "--resume", "2024", "--set", "train.max_steps=14", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "2024/checkpoints/current/meta.json").read_text())["step"] == 14


def test_sample_bad_arguments(trained_run, run_cli, tmp_path, one_line_error):
    one_line_error(run_cli("sample", "--checkpoint", str(trained_run), "--prompts-file", str(tmp_path / "no.txt")),
                    "--prompts-file", "no such file or folder")
    bad = run_cli("sample", "--checkpoint", str(trained_run), "--num-samples", "0")
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr and "Traceback" not in bad.stderr
