"""The Ember HTTP API: search, OpenAI-compatible embeddings, collections, health, metrics, and a
small web page. Build it with :func:`search_api.app.create_app`; run it with ``ember serve``."""
