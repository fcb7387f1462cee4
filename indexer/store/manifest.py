"""The edge store's ``manifest.json``: which collections (vectors, payload indexes, sparse
vectors, metadata) and aliases a store folder holds.

It is the source of truth of :class:`~indexer.store.edge.EdgeStore` and is replaced atomically
(write a temporary file, fsync, ``os.replace``, fsync the folder), so an alias switch or a
collection create/delete is all-or-nothing even if the process dies mid-way. Edits are made on a
:meth:`Manifest.copy` and take effect when :meth:`Manifest.save` has written them.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from indexer.store.model import StoreError


class Manifest:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "manifest.json"
        self.data = self._load()

    @property
    def collections(self) -> dict[str, Any]:
        """Collection name -> its entry (``vectors``, ``payload_indexes``, ``sparse``, ``meta``)."""
        return self.data["collections"]

    @property
    def aliases(self) -> dict[str, str]:
        """Alias -> collection."""
        return self.data["aliases"]

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"collections": {}, "aliases": {}}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.path}: unreadable ({exc})") from None
        data.setdefault("collections", {})
        data.setdefault("aliases", {})
        return dict(data)

    def copy(self) -> dict[str, Any]:
        """A deep copy of the manifest to edit and :meth:`save`."""
        return dict(json.loads(json.dumps(self.data)))

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name("manifest.json.tmp")
        with tmp.open("w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.data = data
