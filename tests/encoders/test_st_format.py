"""sentence-transformers folders (modules.json) load as Ember encoders whose vectors are
sentence-transformers' own: the bundled MiniLM, and tiny random models saved by
sentence-transformers itself for each pooling mode, Normalize or not, with prompts pooled
(include_prompt true) or not. What Ember would compute differently is refused at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers.processors import TemplateProcessing
from transformers import AutoModel, BertConfig, BertTokenizerFast

from encoders import Encoder
from encoders.config import EncoderConfig
from encoders.loading import minilm_folder
from encoders.registry import PRESETS, resolve_config
from encoders.st_format import STFormatError, is_st_folder, load_st_folder
from encoders.testing import tiny_model_folder
from tests.encoders.test_cli_encode import ember

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "a",
    "What proteins bind to the receptor?",
    "The quick brown fox jumps over the lazy dog. " * 60,  # past every max length: truncated
    "42 cells",
    "Search engines rank documents by the cosine similarity of their embeddings.",
    "Ünïcödé text, with punctuation!?",
    "genes",
]
PROMPTS = {"query": "query: ", "document": "passage: "}
COS = 0.99999
# PRESETS' fingerprints computed on main before the prompt fields existed (b399e55)
PRESET_FINGERPRINTS = {
    "smollm2": "9c6127abebd8",
    "smollm2-bi": "34cbe381a665",
    "smollm2-echo": "48b64d5838f2",
    "minilm": "ba1b2bd8060c",
    # d4dea7253d55 (sessions 5-9 preset) until adapter files were hashed by content
    "smollm2-ember": "bc0397232d7d",  # session 14: + 280 distillation steps
}


def assert_same(ember: np.ndarray, st: np.ndarray) -> float:
    """Same direction (cos) and, for unnormalised vectors, the same length."""
    ember, st = np.asarray(ember, dtype=np.float64), np.asarray(st, dtype=np.float64)
    assert ember.shape == st.shape
    cos = (ember * st).sum(1) / np.linalg.norm(ember, axis=1) / np.linalg.norm(st, axis=1)
    assert cos.min() >= COS, cos
    np.testing.assert_allclose(np.linalg.norm(ember, axis=1), np.linalg.norm(st, axis=1), rtol=1e-4)
    return float(cos.min())


def both_roles(folder: Path) -> tuple[float, float]:
    encoder = Encoder.from_config(resolve_config(str(folder)))
    st = SentenceTransformer(str(folder), device="cpu")
    docs = assert_same(encoder.encode_documents(TEXTS), st.encode_document(TEXTS))
    queries = assert_same(encoder.encode_queries(TEXTS), st.encode_query(TEXTS))
    return docs, queries


# ---- the bundled MiniLM ------------------------------------------------------------------------
def test_bundled_minilm_matches_sentence_transformers() -> None:
    folder = minilm_folder()
    assert is_st_folder(folder)
    config = resolve_config(str(folder))
    assert (config.pooling, config.max_length, config.query_max_length) == ("mean", 256, 256)
    assert config.normalize and config.attention == "bidirectional" and config.dtype == "float32"
    assert both_roles(folder) >= (COS, COS)
    # the preset on the same weights gives the same document vectors
    preset = Encoder.from_config(PRESETS["minilm"])
    loaded = Encoder.load(folder)
    assert_same(loaded.encode_documents(TEXTS), preset.encode_documents(TEXTS))


# ---- tiny models saved by sentence-transformers --------------------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("st") / "bert"
    tokenizer = BertTokenizerFast.from_pretrained(minilm_folder())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("st") / "llama", "llama")


@pytest.fixture(scope="module")
def llama_bos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder whose tokenizer adds BOS (as Llama's does)."""
    folder = tiny_model_folder(tmp_path_factory.mktemp("st") / "llama-bos", "llama", seed=1)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer["post_processor"] = json.loads(processor.__getstate__())
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


def save_st(
    model_folder: Path,
    out: Path,
    mode: str,
    *,
    include_prompt: bool = True,
    normalize: bool = True,
    prompts: dict[str, str] | None = None,
    max_seq_length: int = 48,
) -> Path:
    transformer = models.Transformer(str(model_folder), max_seq_length=max_seq_length)
    pooling = models.Pooling(32, pooling_mode=mode, include_prompt=include_prompt)
    modules: list[Any] = [transformer, pooling, *([models.Normalize()] if normalize else [])]
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(out))
    return out


def family(request: pytest.FixtureRequest, name: str) -> Path:
    folder: Path = request.getfixturevalue(name)
    return folder


MODES = ["mean", "weightedmean", "lasttoken", "cls"]
# (family, include_prompt, mode) -> refused: what Ember does not reproduce
REFUSED = {
    ("bert", False, "weightedmean"): "position weights",
    ("bert", False, "cls"): "first token after the prompt",
    ("llama", False, "weightedmean"): "position weights",
    ("llama", False, "cls"): "first token after the prompt",
    ("llama", False, "mean"): "trailing space",  # 'query: ' alone ends in a token 'Ġ'
    ("llama", False, "lasttoken"): "trailing space",  # ST pools a zero vector for 'a'
}


@pytest.mark.parametrize("include_prompt", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["bert", "llama"])
def test_tiny_models_match_sentence_transformers(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, mode: str, include_prompt: bool
) -> None:
    normalize = include_prompt != (mode in ("mean", "cls"))  # both ways for every mode
    folder = save_st(
        family(request, name),
        tmp_path / "st",
        mode,
        include_prompt=include_prompt,
        normalize=normalize,
        prompts=PROMPTS,
    )
    refused = REFUSED.get((name, include_prompt, mode))
    if refused is not None:
        with pytest.raises(STFormatError, match=refused) as err:
            resolve_config(str(folder))
        assert str(folder / "1_Pooling" / "config.json") in str(err.value)
        assert "\n" not in str(err.value)
        return
    config = resolve_config(str(folder))
    assert config.normalize is normalize and config.pool_prompt is include_prompt
    assert config.attention == ("bidirectional" if name == "bert" else "causal")
    assert (config.query_prompt, config.document_prompt) == ("query: ", "passage: ")
    assert both_roles(folder) >= (COS, COS)


def test_prompt_without_trailing_space_is_excluded_exactly(llama: Path, tmp_path: Path) -> None:
    """A BPE prompt that tokenises alone as in context: include_prompt false is reproduced."""
    prompts = {"query": "query:", "document": "passage:"}
    folder = save_st(llama, tmp_path / "st", "mean", include_prompt=False, prompts=prompts)
    assert not resolve_config(str(folder)).pool_prompt
    assert both_roles(folder) >= (COS, COS)


def test_bos_decoder(llama_bos: Path, tmp_path: Path) -> None:
    """include_prompt true pools the BOS as sentence-transformers does; include_prompt false with
    a role that has no prompt is refused (sentence-transformers pools that role's BOS)."""
    pooled = save_st(llama_bos, tmp_path / "pooled", "mean", prompts=PROMPTS)
    assert Encoder.load(pooled).tokenize(["a"], None, 8)[0].ids[0] == 1  # BOS added
    assert both_roles(pooled) >= (COS, COS)
    half = save_st(
        llama_bos, tmp_path / "half", "mean", include_prompt=False, prompts={"query": "query:"}
    )
    with pytest.raises(STFormatError, match="adds BOS"):
        resolve_config(str(half))
    both = save_st(
        llama_bos,
        tmp_path / "both",
        "mean",
        include_prompt=False,
        prompts={"query": "query:", "document": "passage:"},
    )
    assert both_roles(both) >= (COS, COS)


def test_no_prompts_reads_queries_bare(bert: Path, tmp_path: Path) -> None:
    """Without a query prompt queries read as documents do; Ember's task instruction is not
    applied (the folder's prompts replace it), and a query prompt replaces it too."""
    bare = Encoder.load(save_st(bert, tmp_path / "bare", "mean"))
    np.testing.assert_allclose(
        bare.encode_queries(TEXTS, "Retrieve passages:"), bare.encode_documents(TEXTS), atol=1e-6
    )
    prompted = Encoder.load(save_st(bert, tmp_path / "prompted", "mean", prompts=PROMPTS))
    np.testing.assert_allclose(
        prompted.encode_queries(TEXTS, "Retrieve passages:"),
        prompted.encode_queries(TEXTS),
        atol=1e-6,
    )
    named = prompted.encode_queries_named(TEXTS)["dense"]
    np.testing.assert_allclose(named, prompted.encode_queries(TEXTS), atol=1e-6)


def test_eval_cache_encodes_queries_with_the_query_prompt(bert: Path, tmp_path: Path) -> None:
    from indexer.evaluation.cache import VectorCache, encode_cached

    encoder = Encoder.load(save_st(bert, tmp_path / "st", "mean", prompts=PROMPTS))
    cache = VectorCache(tmp_path / "cache")
    queries = encode_cached(encoder, TEXTS, query=True, cache=cache)
    docs = encode_cached(encoder, TEXTS, cache=cache)
    np.testing.assert_allclose(queries, encoder.encode(TEXTS, query=True), atol=1e-6)
    np.testing.assert_allclose(docs, encoder.encode_documents(TEXTS), atol=1e-6)
    assert not np.allclose(queries, docs, atol=1e-3)


def test_max_length(bert: Path, tmp_path: Path) -> None:
    """sentence-transformers 6 saves the length as the tokenizer's model_max_length; older
    folders as sentence_bert_config's max_seq_length; either is capped at the positions."""
    folder = save_st(bert, tmp_path / "st", "mean", max_seq_length=20)
    config = resolve_config(str(folder))
    assert (config.max_length, config.query_max_length) == (20, 20)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1000}))
    assert load_st_folder(folder).max_length == 128  # BertConfig max_position_embeddings


# ---- prompt choice
@pytest.mark.parametrize(
    ("prompts", "default", "expected"),
    [
        ({}, None, ("", "")),
        ({"query": "q: ", "passage": "p: "}, None, ("q: ", "p: ")),
        ({"query": "q: ", "corpus": "c: ", "passage": "p: "}, None, ("q: ", "p: ")),
        ({"document": "d: ", "corpus": "c: "}, None, ("", "d: ")),
        ({"retrieval": "r: ", "query": "q: "}, "retrieval", ("q: ", "r: ")),
        ({"classification": "c: "}, "classification", ("c: ", "c: ")),
    ],
)
def test_prompt_choice(
    bert: Path,
    tmp_path: Path,
    prompts: dict[str, str],
    default: str | None,
    expected: tuple[str, str],
) -> None:
    folder = save_st(bert, tmp_path / "st", "mean")
    file = folder / "config_sentence_transformers.json"
    config = json.loads(file.read_text())
    file.write_text(json.dumps({**config, "prompts": prompts, "default_prompt_name": default}))
    loaded = load_st_folder(folder)
    assert (loaded.query_prompt, loaded.document_prompt) == expected


# ---- refusals
@pytest.fixture
def plain(bert: Path, tmp_path: Path) -> Path:
    return save_st(bert, tmp_path / "plain", "mean")


def edit_json(file: Path, **changes: Any) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_refuses_max_pooling(plain: Path) -> None:
    edit_json(plain / "1_Pooling" / "config.json", pooling_mode="max")
    with pytest.raises(STFormatError, match="pooling mode 'max' is not supported") as err:
        resolve_config(str(plain))
    assert str(plain / "1_Pooling" / "config.json") in str(err.value)


def test_refuses_several_and_legacy_pooling_modes(plain: Path) -> None:
    file = plain / "1_Pooling" / "config.json"
    edit_json(file, pooling_mode=["mean", "cls"])
    with pytest.raises(STFormatError, match="concatenated"):
        resolve_config(str(plain))
    file.write_text(json.dumps({"pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(STFormatError, match="mean_sqrt_len_tokens"):
        resolve_config(str(plain))
    file.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert resolve_config(str(plain)).pooling == "first_token"


@pytest.mark.parametrize(
    "module",
    [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 2, "name": "2", "path": "2_Mine", "type": "my_package.MyModule"},
    ],
)
def test_refuses_other_modules(plain: Path, module: dict[str, Any]) -> None:
    file = plain / "modules.json"
    modules = json.loads(file.read_text())
    file.write_text(json.dumps([*modules, module]))
    with pytest.raises(STFormatError, match="is not supported") as err:
        resolve_config(str(plain))
    assert str(file) in str(err.value) and module["type"] in str(err.value)


def test_refuses_modules_out_of_order(plain: Path) -> None:
    file = plain / "modules.json"
    modules = json.loads(file.read_text())
    file.write_text(json.dumps(modules[::-1]))
    with pytest.raises(STFormatError, match="in that order"):
        resolve_config(str(plain))


def test_refuses_lowercasing_a_cased_tokenizer(llama: Path, tmp_path: Path) -> None:
    folder = save_st(llama, tmp_path / "st", "lasttoken")
    edit_json(folder / "sentence_bert_config.json", do_lower_case=True)
    with pytest.raises(STFormatError, match="do_lower_case"):
        resolve_config(str(folder))


def test_transformer_in_a_subfolder(bert: Path, plain: Path) -> None:
    """Published folders may keep the Transformer in 0_Transformer/."""
    sub = plain / "0_Transformer"
    sub.mkdir()
    for f in plain.iterdir():
        if f.is_file() and f.name not in {"modules.json", "config_sentence_transformers.json"}:
            shutil.move(str(f), sub / f.name)
    modules = json.loads((plain / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (plain / "modules.json").write_text(json.dumps(modules))
    assert resolve_config(str(plain)).base_model == str(sub.resolve())
    assert both_roles(plain) >= (COS, COS)


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_encode_st_folder(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    res = ember("encode", "--encoder", str(plain), "-o", str(out), "--no-progress", stdin="a b\n")
    assert res.returncode == 0, res.stderr
    expected = SentenceTransformer(str(plain), device="cpu").encode_document(["a b"])
    assert_same(np.load(out), expected)
    edit_json(plain / "1_Pooling" / "config.json", pooling_mode="max")
    res = ember("encode", "--encoder", str(plain), stdin="a b\n")
    assert res.returncode == 1
    assert "pooling mode 'max'" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_encode_query_applies_the_query_prompt(bert: Path, tmp_path: Path) -> None:
    folder = save_st(bert, tmp_path / "st", "mean", include_prompt=False,
                     prompts={"query": "query: ", "document": "passage: "})  # fmt: skip
    st = SentenceTransformer(str(folder), device="cpu")
    for flag, expected in (
        ("--query", st.encode_query(["a b"])),
        (None, st.encode_document(["a b"])),
    ):
        out = tmp_path / f"{flag}.npy"
        args = ["encode", "--encoder", str(folder), "-o", str(out), "--no-progress"]
        res = ember(*args, *([flag] if flag else []), stdin="a b\n")
        assert res.returncode == 0, res.stderr
        assert_same(np.load(out), expected)


# ---- fingerprints
def test_preset_fingerprints_unchanged() -> None:
    assert {name: PRESETS[name].fingerprint() for name in PRESET_FINGERPRINTS} == (
        PRESET_FINGERPRINTS
    )


def test_prompt_fields_in_the_fingerprint() -> None:
    base = EncoderConfig()
    assert base.model_copy(update={"query_prompt": "q: "}).fingerprint() == base.fingerprint()
    assert base.model_copy(update={"document_prompt": "p: "}).fingerprint() != base.fingerprint()
    assert base.model_copy(update={"pool_prompt": True}).fingerprint() != base.fingerprint()
