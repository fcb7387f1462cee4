"""Typed encoder configuration, saved as ``encoder_config.json`` beside weights and adapters."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_FILE = "encoder_config.json"

Attention = Literal["causal", "bidirectional"]
Pooling = Literal[
    "mean", "weighted_mean", "last_token", "first_token", "latent_attention", "multi_layer"
]
# Encoder kinds: plain LLM2Vec-style pooling, LLaRA prompt embeddings, MoEE routing embeddings.
Kind = Literal["llm2vec", "llara", "moee"]
TRAINABLE_POOLING = ("latent_attention", "multi_layer")
CPU_TOKEN_BUDGET = 2048  # padded tokens per forward when token_budget is unset (budget_for)
GPU_TOKEN_BUDGET = 16384
PaddingSide = Literal["left", "right"]
# How vectors are computed, not what they are (see encoders.hardware): "auto" is bfloat16 where
# the CPU (or GPU) has native bf16 matmuls and float32 elsewhere; "int8" quantises the Linear
# layers dynamically (CPU only). EMBER_DTYPE overrides it at load time.
DType = Literal["auto", "float32", "bfloat16", "float16", "int8"]
# how dtype int8 runs (encoders.onnx_int8): not part of the fingerprint either
Int8Backend = Literal["auto", "onnxruntime", "torch"]


class AdapterSpec(BaseModel):
    """One LoRA adapter in the ordered stack. ``merged`` folds it into the base weights."""

    model_config = ConfigDict(extra="forbid")

    path: str
    merged: bool = True


class MoeeStats(BaseModel):
    """Per-dimension mean and standard deviation of the raw MoEE vectors (``hs``: pooled hidden
    state, ``rw``: pooled routing weights of every MoE layer), fitted once on a corpus sample by
    :meth:`encoders.moee.MoeeEncoder.fit_stats`. Stored inline so a saved encoder reproduces its
    vectors exactly and the fingerprint changes when they are refitted."""

    model_config = ConfigDict(extra="forbid")

    hs_mean: list[float]
    hs_std: list[float]
    rw_mean: list[float]
    rw_std: list[float]
    samples: int = Field(ge=1, description="texts the statistics were fitted on")

    @model_validator(mode="after")
    def _shapes(self) -> MoeeStats:
        if len(self.hs_mean) != len(self.hs_std) or len(self.rw_mean) != len(self.rw_std):
            raise ValueError("MoEE stats: each mean needs a std of the same length")
        if min(self.hs_std + self.rw_std, default=1.0) <= 0:
            raise ValueError("MoEE stats: standard deviations must be positive")
        return self


class Standardization(BaseModel):
    """Corpus-fitted standardisation of any encoder's vectors (``ember fit-stats``).

    The pooled vector is L2-normalised, each dimension centred and scaled with ``mean`` / ``std``
    (fitted ONCE on a corpus sample of documents, never per batch, so a vector never depends on
    its neighbours), optionally rotated by a whitening matrix (``whitening``: a float32 ``.npy``
    D x D file beside the config, checked by ``whitening_sha256``), then normalised as usual.
    A decoder's states are dominated by a few huge dimensions shared by every text; centring and
    scaling takes them out. Queries and documents get the same transform. Part of the
    fingerprint: refitting means reindexing."""

    model_config = ConfigDict(extra="forbid")

    mean: list[float]
    std: list[float]
    whitening: str | None = None
    whitening_sha256: str | None = None
    samples: int = Field(ge=2, description="texts the statistics were fitted on")
    source: str = Field(default="", description="what the statistics were fitted on")

    @model_validator(mode="after")
    def _shapes(self) -> Standardization:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("standardize: mean and std need the same, non-zero length")
        if min(self.std) <= 0:
            raise ValueError("standardize: standard deviations must be positive")
        if (self.whitening is None) != (self.whitening_sha256 is None):
            raise ValueError("standardize: whitening and whitening_sha256 go together")
        return self


class MoeeConfig(BaseModel):
    """MoEE (Fan et al.): hidden-state (``hs``) and routing-weight (``rw``) embeddings.

    ``similarity="sum"`` scores cos(hs) + ``rw_weight`` * cos(rw) from two named vectors;
    ``"concat"`` serves the same score from one vector [hs, sqrt(w) * rw] / sqrt(1 + w) whose
    cosine is (cos(hs) + w * cos(rw)) / (1 + w). ``standardize`` centres and scales each
    dimension with the fitted :class:`MoeeStats` (required before encoding when true).
    """

    model_config = ConfigDict(extra="forbid")

    similarity: Literal["sum", "concat"] = "sum"
    rw_weight: float = Field(default=1.0, ge=0.0)
    rw_pooling: Literal["mean", "weighted_mean", "last_token", "first_token"] = "mean"
    standardize: bool = True
    router_source: Literal["auto", "output", "hook"] = Field(
        default="auto", description="router logits from output_router_logits or a gate hook"
    )
    stats: MoeeStats | None = None


class EncoderConfig(BaseModel):
    """Everything needed to reproduce an encoder's vectors.

    ``base_model`` is a local HF folder, or ``builtin:smollm2-135m-instruct`` /
    ``builtin:all-minilm-l6-v2`` for the models shipped by PyPI packages.
    Relative paths (base model, adapters) resolve against the folder the config was loaded from.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "ember-encoder"
    base_model: str = "builtin:smollm2-135m-instruct"
    attention: Attention = "bidirectional"
    pooling: Pooling = "mean"
    max_length: int = Field(default=512, ge=2)
    query_max_length: int = Field(default=256, ge=2)
    # LLM2Vec joins instruction and text with one space: f"{instruction.strip()} {text}".
    instruction_template: str = "{instruction} "
    text_prefix: str = Field(
        default="",
        description="prepended to every text, before any instruction, never pooled (the chat "
        "turn llm2vec wraps around inputs of instruct models: '[INST] ' for Mistral-Instruct)",
    )
    text_suffix: str = Field(
        default="",
        description="appended to every text and pooled with it (llm2vec's eos_token pooling: "
        "' </s>' for Llama / Mistral, '<|endoftext|>' for Qwen2)",
    )
    # sentence-transformers prompts (encoders.st_format): a fixed query prefix that replaces the
    # task instruction, a prefix of every document, and whether the prefix is pooled with the text
    query_prompt: str | None = Field(
        default=None, description="fixed query prefix; when set it replaces the task instruction"
    )
    document_prompt: str = Field(default="", description="prefix of every document")
    pool_prompt: bool = Field(
        default=False,
        description="pool every token from the first (the prefix, BOS or [CLS] included), as "
        "sentence-transformers' include_prompt; by default the prefix and a decoder's BOS are not",
    )
    normalize: bool = True
    padding_side: PaddingSide = "right"
    dtype: DType = "float32"
    int8_backend: Int8Backend = Field(
        default="auto",
        description="dtype int8: onnxruntime (exported once, the faster one measured), torch "
        "(dynamic quantisation), or auto: onnxruntime where installed and supported",
    )
    attn_implementation: str | None = None
    adapters: list[AdapterSpec] = Field(default_factory=list)
    kind: Kind = "llm2vec"
    pooler: str | None = Field(
        default=None, description="folder of a trainable pooler (latent_attention, multi_layer)"
    )
    echo: bool = Field(default=False, description="Echo embeddings: repeat the text, pool copy 2")
    echo_template: str = "Rewrite the sentence: {text}\nRewritten sentence: {text}"
    moee: MoeeConfig | None = Field(default=None, description="MoEE settings (kind 'moee')")
    standardize: Standardization | None = Field(
        default=None, description="corpus-fitted per-dimension standardisation (fit-stats)"
    )
    token_budget: int | None = Field(
        default=None,
        ge=1,
        description="max padded tokens per forward; unset: 2048 on the CPU, 16384 on a GPU",
    )
    max_batch_size: int = Field(default=64, ge=1)

    def budget_for(self, device_type: str) -> int:
        """``token_budget``, or the default for the device type (``cpu``, ``cuda``...) when
        unset: on the CPU small batches run faster (their activations stay in cache; SmolLM2-135M
        fp32 1.5x, MiniLM 1.4x at 2048 vs 16384 tokens: bench/RESULTS.md, encode throughput,
        session 15), a GPU wants large ones."""
        if self.token_budget is not None:
            return self.token_budget
        return CPU_TOKEN_BUDGET if device_type == "cpu" else GPU_TOKEN_BUDGET

    def save(self, folder: str | Path) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        out = path / CONFIG_FILE
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(out)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> EncoderConfig:
        path = Path(folder)
        file = path / CONFIG_FILE if path.is_dir() else path
        cfg = cls.model_validate_json(file.read_text())
        return cfg.resolved(file.parent)

    def resolved(self, root: Path) -> EncoderConfig:
        """Return a copy with relative local paths made absolute against ``root``."""

        def fix(p: str) -> str:
            if p.startswith("builtin:") or Path(p).is_absolute():
                return p
            return str((root / p).resolve())

        standardize = self.standardize
        if standardize is not None and standardize.whitening:
            standardize = standardize.model_copy(update={"whitening": fix(standardize.whitening)})
        return self.model_copy(
            update={
                "base_model": fix(self.base_model),
                "adapters": [a.model_copy(update={"path": fix(a.path)}) for a in self.adapters],
                "pooler": fix(self.pooler) if self.pooler else None,
                "standardize": standardize,
            }
        )

    def format_prefix(self, instruction: str | None) -> str:
        if not instruction or not instruction.strip():
            return ""
        return self.instruction_template.format(instruction=instruction.strip())

    def prefix(self, instruction: str | None, *, query: bool = False) -> str:
        """What precedes a text: ``text_prefix``, then a query's ``query_prompt`` when set (it
        replaces the instruction), else the formatted instruction, else a document's
        ``document_prompt``."""
        if query and self.query_prompt is not None:
            return self.text_prefix + self.query_prompt
        if instruction and instruction.strip():
            return self.text_prefix + self.format_prefix(instruction)
        return self.text_prefix + ("" if query else self.document_prompt)

    def weight_paths(self) -> list[str]:
        return [self.base_model, *(a.path for a in self.adapters), *filter(None, [self.pooler])]

    @model_validator(mode="after")
    def _consistent(self) -> EncoderConfig:
        if (self.pooling in TRAINABLE_POOLING) != (self.pooler is not None):
            raise ValueError(
                f"pooling {self.pooling!r} and pooler {self.pooler!r} disagree: trainable "
                f"poolings {TRAINABLE_POOLING} need a pooler folder, the others take none"
            )
        if self.moee is not None and self.kind != "moee":
            raise ValueError(f"moee settings given for kind {self.kind!r}; set kind='moee'")
        if self.standardize is not None and self.kind == "moee":
            raise ValueError("moee encoders standardise hs and rw themselves (moee.stats)")
        if self.echo and self.echo_template.count("{text}") != 2:
            raise ValueError("echo_template must contain {text} exactly twice")
        if self.echo and not self.echo_template.endswith("{text}"):
            raise ValueError("echo_template must end with the second {text} (it is pooled)")
        if self.echo and self.pool_prompt:
            raise ValueError(
                "echo pools the second copy of the text only; pool_prompt is for plain encoders"
            )
        return self

    def text_tokens(self) -> int:
        """Tokens of a document's text this encoder reads: ``max_length``, half of it for Echo
        (the text is read twice); the indexer refuses longer chunks."""
        return self.max_length // 2 if self.echo else self.max_length

    def fingerprint(self) -> str:
        """Short stable hash of what determines document vectors (not query-only settings).

        The dtype is not part of it: it is how vectors are computed, not what they are (bf16
        runs agree with fp32 to cos >= 0.9999 on SciFact documents; int8, opt-in, to ~0.99:
        bench/RESULTS.md, dtype section), so a collection built in bf16 is searched with fp32
        queries and the other way round. The dtype run in is recorded with each build instead
        (``indexer.pipeline.begin_build``)."""
        doc_fields = self.model_dump(
            exclude={
                "name",
                "query_max_length",
                "instruction_template",
                "token_budget",
                "max_batch_size",
                "int8_backend",
                "attn_implementation",
                "padding_side",
                "query_prompt",
            }
        )
        # hashed as the constant every fingerprint from before the option held, so they stay
        doc_fields["dtype"] = "float32"
        moee = doc_fields.get("moee")
        if moee is not None and moee.get("similarity") == "sum":
            # sum mode stores hs and rw apart; the weight only scores queries (no reindex)
            moee.pop("rw_weight", None)
        for option in ("text_prefix", "text_suffix"):
            if not doc_fields.get(option):
                doc_fields.pop(option, None)  # fingerprints from before the option stay
        for key, default in (("document_prompt", ""), ("pool_prompt", False)):
            if doc_fields.get(key) == default:
                doc_fields.pop(key, None)  # fingerprints from before the options stay
        if doc_fields.get("standardize") is None:
            doc_fields.pop("standardize", None)  # fingerprints from before the option stay
        elif doc_fields["standardize"].get("whitening"):
            doc_fields["standardize"].pop("whitening")  # a path; its sha256 stays
        # where adapter and pooler folders live is not part of the vectors (a packaged preset,
        # a copied encoder folder): their order and merge mode are, their contents are below
        doc_fields["adapters"] = [{"merged": a.merged} for a in self.adapters]
        if doc_fields.get("pooler") is not None:
            doc_fields["pooler"] = "pooler"
        doc_fields["weights"] = [_weights_signature(p) for p in self.weight_paths()]
        blob = json.dumps(doc_fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# Weight files up to this size are hashed by content (adapters, poolers: a few MB); larger
# ones (base models) by name and size, which is what a different checkpoint changes.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024


def _weights_signature(path: str) -> str:
    """Names and sizes of the weight files in a folder, plus the content hash of the small
    ones, so a retrained adapter of the same rank (same file sizes) changes the hash."""
    p = Path(path)
    if not p.is_dir():
        return path
    files = []
    for f in p.iterdir():
        if f.suffix not in {".safetensors", ".bin", ".gguf", ".pt"}:
            continue
        stat = f.stat()
        entry = f"{f.name}:{stat.st_size}"
        if stat.st_size <= CONTENT_HASH_LIMIT:
            entry += ":" + _content_hash(str(f.resolve()), stat.st_size, stat.st_mtime_ns)
        files.append(entry)
    return ";".join(sorted(files))


@functools.lru_cache(maxsize=256)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a file (cached per path, size and mtime: fingerprints are taken often)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
