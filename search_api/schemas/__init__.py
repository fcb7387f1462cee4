"""Request and response models (they are the OpenAPI spec: keep constraints here, not in routes),
one module per route group; the shared field types in :mod:`search_api.schemas.fields`.

The job models (:mod:`search_api.schemas.jobs`) are not re-exported here: they read the workers'
defaults, and the other routes need not import the workers' client.
"""

from search_api.schemas.embeddings import (
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Usage,
)
from search_api.schemas.fields import (
    COLLECTION_PATTERN,
    INT64_MAX,
    INT64_MIN,
    AcceptIntegralFloat,
    FieldName,
    FilterCondition,
    FiniteFloat,
    Int64,
    NonBlank,
    Range,
    Scalar,
    Text,
    TextInput,
    ValidUnicode,
    lone_surrogate,
)
from search_api.schemas.meta import (
    CollectionOut,
    CollectionsResponse,
    ErrorItem,
    ErrorResponse,
    HealthResponse,
    ServedEncoder,
    TaskInfo,
    TasksResponse,
)
from search_api.schemas.search import (
    FusionParams,
    Passage,
    SearchHit,
    SearchRequest,
    SearchResponse,
)

__all__ = [
    "COLLECTION_PATTERN",
    "INT64_MAX",
    "INT64_MIN",
    "AcceptIntegralFloat",
    "CollectionOut",
    "CollectionsResponse",
    "Embedding",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "ErrorItem",
    "ErrorResponse",
    "FieldName",
    "FilterCondition",
    "FiniteFloat",
    "FusionParams",
    "HealthResponse",
    "Int64",
    "NonBlank",
    "Passage",
    "Range",
    "Scalar",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "ServedEncoder",
    "TaskInfo",
    "TasksResponse",
    "Text",
    "TextInput",
    "Usage",
    "ValidUnicode",
    "lone_surrogate",
]
