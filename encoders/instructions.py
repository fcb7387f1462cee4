"""Task names -> query instructions (the LLM2Vec / E5 retrieval instruction set).

Instructions are prepended to queries only; documents are always encoded instruction-free.
"""

from __future__ import annotations

from encoders.errors import EmberError

TASKS: dict[str, str] = {
    "web_search": "Given a web search query, retrieve relevant passages that answer the query:",
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim:",
    "fever": "Given a claim, retrieve documents that support or refute the claim:",
    "climate_fever": (
        "Given a claim about climate change, retrieve documents that support or refute the claim:"
    ),
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question:",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question:",
    "dbpedia": "Given a query, retrieve relevant entity descriptions from DBPedia:",
    "quora": (
        "Given a question, retrieve questions that are semantically equivalent to the given "
        "question:"
    ),
    "scidocs": (
        "Given a scientific paper title, retrieve paper abstracts that are cited by the given "
        "paper:"
    ),
    "trec_covid": "Given a query on COVID-19, retrieve documents that answer the query:",
    "touche2020": (
        "Given a question, retrieve detailed and persuasive arguments that answer the question:"
    ),
    "nfcorpus": "Given a question, retrieve relevant documents that best answer the question:",
    "arguana": "Given a claim, find documents that refute the claim:",
    "fiqa": "Given a financial question, retrieve user replies that best answer the question:",
    "cqadupstack": (
        "Given a question, retrieve detailed question descriptions from Stackexchange that are "
        "duplicates to the given question:"
    ),
    "sts": "Retrieve semantically similar text:",
}
DEFAULT_TASK = "web_search"


class UnknownTaskError(EmberError, ValueError):
    status = 422


def instruction_for(task: str) -> str:
    try:
        return TASKS[task]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}"
        ) from None
