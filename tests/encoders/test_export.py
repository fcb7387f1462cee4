"""`ember export`: sentence-transformers folders that the real sentence-transformers 6.2 loads and
encodes to Ember's vectors, refusals for what it cannot compute, and merged HF folders Ember loads
back. Tiny random models (and the bundled MiniLM) built in-process; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from sentence_transformers import SentenceTransformer

from encoders import AdapterSpec, Encoder, EncoderConfig, resolve_config
from encoders.export import ExportError, ResultsError, export_encoder, read_results, st_refusal
from encoders.loading import MINILM
from encoders.standardize import fit
from encoders.testing import tiny_model_folder
from tests.encoders.test_cli_encode import ember

# varied lengths, so batches pad; one longer than the tiny models' 64-token limit below
TEXTS = [
    "hello world",
    "Vitamin D deficiency is associated with an increased risk of infection in adults.",
    "2 cells",
    "Search engines rank documents by the cosine similarity of their embeddings. " * 6,
    "(a) protein",
]
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim:"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny causal Llama folder and a random LoRA adapter over it."""
    root = tmp_path_factory.mktemp("export")
    base = tiny_model_folder(root / "base", "llama")
    model = Encoder.from_config(EncoderConfig(base_model=str(base))).model
    torch.manual_seed(5)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)  # fmt: skip
    get_peft_model(model, lora).save_pretrained(root / "lora")
    return base, root / "lora"


def st_vectors(folder: Path, queries: bool) -> np.ndarray:
    model = SentenceTransformer(str(folder), device="cpu")
    encode = model.encode_query if queries else model.encode_document
    return np.asarray(encode(TEXTS, batch_size=3, convert_to_numpy=True))


def ember_vectors(config: EncoderConfig, instruction: str | None) -> tuple[np.ndarray, np.ndarray]:
    encoder = Encoder.from_config(config)
    return encoder.encode_documents(TEXTS), encoder.encode_queries(TEXTS, instruction)


@pytest.mark.parametrize(
    ("pooling", "instruction"),
    [("mean", None), ("weighted_mean", None), ("last_token", INSTRUCTION),
     ("first_token", INSTRUCTION)],
)  # fmt: skip
def test_causal_decoder_with_merged_adapter_round_trips_through_sentence_transformers(
    tiny: tuple[Path, Path], tmp_path: Path, pooling: str, instruction: str | None
) -> None:
    base, lora = tiny
    config = EncoderConfig(
        base_model=str(base), attention="causal", pooling=pooling, max_length=64,
        query_max_length=64, adapters=[AdapterSpec(path=str(lora), merged=False)],
    )  # fmt: skip
    report = export_encoder(config, tmp_path / "st", instruction=instruction)
    assert report.query_prompt == config.format_prefix(instruction)
    docs, queries = ember_vectors(config, instruction)
    assert cosines(st_vectors(tmp_path / "st", queries=False), docs).min() >= 0.9999
    assert cosines(st_vectors(tmp_path / "st", queries=True), queries).min() >= 0.9999
    if instruction:  # the prompt is really used: queries differ from documents
        assert cosines(queries, docs).min() < 0.999


def test_minilm_with_a_prompt_and_whitened_standardisation(tmp_path: Path) -> None:
    plain = resolve_config("minilm")
    raw = Encoder.from_config(plain).encode_pooled(TEXTS * 4 + ["a b", "c d e"])
    stats = fit(raw, whiten=True, out_dir=tmp_path / "stats", source="test texts")
    config = plain.model_copy(update={"standardize": stats}).resolved(tmp_path / "stats")
    report = export_encoder(config, tmp_path / "st", instruction="Represent this sentence:")
    assert any("Dense" in n for n in report.notes)
    docs, queries = ember_vectors(config, "Represent this sentence:")
    assert cosines(st_vectors(tmp_path / "st", queries=False), docs).min() >= 0.9999
    assert cosines(st_vectors(tmp_path / "st", queries=True), queries).min() >= 0.9999
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == [
        "Transformer", "Pooling", "Normalize", "Dense", "Normalize"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("update", "why"),
    [
        ({"attention": "bidirectional"}, "bidirectional attention"),
        ({"kind": "moee"}, "routing weights"),
        ({"kind": "llara"}, "LLaRA"),
        ({"echo": True}, "echo"),
        ({"text_suffix": "</s>"}, "text_suffix"),
    ],
)
def test_what_sentence_transformers_cannot_compute_is_refused_from_the_config(
    update: dict[str, object], why: str
) -> None:
    config = EncoderConfig(base_model="x", attention="causal").model_copy(update=update)
    assert why in (st_refusal(config, decoder=True) or "")
    assert st_refusal(EncoderConfig(base_model="x", attention="causal"), decoder=True) is None
    # an encoder-only model is bidirectional by nature: nothing to refuse
    assert st_refusal(EncoderConfig(base_model="x"), decoder=False) is None


@pytest.mark.parametrize(
    ("pooling", "why"),
    [("mean", "tokenises the same both ways"), ("weighted_mean", "position weights")],
)
def test_a_query_prompt_sentence_transformers_would_pool_differently_is_refused(
    tiny: tuple[Path, Path], tmp_path: Path, pooling: str, why: str
) -> None:
    """The tiny byte-level BPE splits the instruction's trailing space off when it stands alone
    (as sentence-transformers measures a prompt), so mean pooling would lose the first query
    token; weighted mean counts positions from the prompt in sentence-transformers."""
    config = EncoderConfig(base_model=str(tiny[0]), attention="causal", pooling=pooling)
    with pytest.raises(ExportError, match=why):
        export_encoder(config, tmp_path / "st", instruction=INSTRUCTION)
    assert not (tmp_path / "st").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_hf_format_reloads_to_the_same_vectors_with_a_model_card(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    base, lora = tiny
    source = EncoderConfig(
        name="tiny-bi", base_model=str(base), attention="bidirectional", pooling="mean",
        adapters=[AdapterSpec(path=str(lora), merged=False)],
    )  # fmt: skip
    raw = Encoder.from_config(source).encode_pooled([*TEXTS, "a", "b c"])
    source = source.model_copy(update={"standardize": fit(raw, source="test texts")})
    result = tmp_path / "eval.json"
    row = {"dataset": "scifact", "split": "test", "mode": "dense", "ndcg@10": 0.4108,
           "recall@100": 0.86, "mrr@10": 0.37, "queries": 300}  # fmt: skip
    result.write_text(json.dumps({**row, "fingerprint": source.fingerprint()}))
    export_encoder(source, tmp_path / "hf", "hf", results=read_results([result]))
    back = Encoder.load(tmp_path / "hf")
    assert back.config.adapters == [] and back.config.base_model == str(tmp_path / "hf")
    want = Encoder.from_config(source)
    assert cosines(back.encode_documents(TEXTS), want.encode_documents(TEXTS)).min() >= 0.99999
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| scifact | test | dense | 41.1 | 86.0 | 37.0 | 300 |" in card
    assert "bidirectional" in card


def test_results_from_another_encoder_or_not_eval_output_are_refused(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    config = EncoderConfig(base_model=str(tiny[0]), attention="causal")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"ndcg@10": 0.5, "fingerprint": "000000000000"}))
    with pytest.raises(ResultsError, match="measured with encoder 000000000000"):
        export_encoder(config, tmp_path / "out", "hf", results=read_results([other]))
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    with pytest.raises(ResultsError, match=r"junk.json: not an `ember eval"):
        read_results([junk])
    assert not (tmp_path / "out").exists()


def test_an_existing_out_needs_force(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    config = EncoderConfig(base_model=str(tiny[0]), attention="causal", pooling="last_token")
    out = tmp_path / "st"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists"):
        export_encoder(config, out)
    assert (out / "keep.txt").read_text() == "mine"
    export_encoder(config, out, force=True)
    assert (out / "modules.json").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


def test_cli_exports_minilm_and_refuses_in_one_line(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    res = ember("export", "minilm", str(tmp_path / "minilm"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "minilm" / "1_Pooling" / "config.json").is_file()
    config = json.loads((tmp_path / "minilm" / "config_sentence_transformers.json").read_text())
    assert config["prompts"]["query"] == ""  # encoder-only: no instruction by default, as eval
    assert resolve_config("minilm").base_model == MINILM

    bi = tmp_path / "bi"
    EncoderConfig(base_model=str(tiny[0]), attention="bidirectional").save(bi)
    res = ember("export", str(bi), str(tmp_path / "refused"))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "bidirectional" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "refused").exists()
    res = ember("export", str(tmp_path / "nothing-here"), str(tmp_path / "x"))
    assert res.returncode == 1 and "--encoder" in res.stderr


def test_a_sentence_transformers_folder_with_prompts_round_trips(tmp_path: Path) -> None:
    """In through encoders.st_format, out through ember export: the exported folder encodes as
    the original (query and document prompts, prompt left out of the mean)."""
    from sentence_transformers import models

    from encoders.loading import minilm_folder

    modules = [
        models.Transformer(str(minilm_folder()), max_seq_length=128),
        models.Pooling(384, pooling_mode="mean", include_prompt=False),
        models.Normalize(),
    ]
    prompts = {"query": "query: ", "document": "passage: "}
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(tmp_path / "in"))
    config = resolve_config(str(tmp_path / "in"))
    assert (config.query_prompt, config.document_prompt) == ("query: ", "passage: ")
    export_encoder(config, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == prompts
    for queries in (False, True):
        before, after = st_vectors(tmp_path / "in", queries), st_vectors(tmp_path / "out", queries)
        assert cosines(before, after).min() >= 0.9999


def test_exported_weights_are_fp32_whatever_ember_dtype_says(
    tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    monkeypatch.setenv("EMBER_DTYPE", "bfloat16")
    config = EncoderConfig(base_model=str(tiny[0]), attention="causal", pooling="last_token")
    export_encoder(config, tmp_path / "st")
    with safe_open(str(tmp_path / "st" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"F32"}
