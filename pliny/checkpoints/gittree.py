"""Editing git trees directly in the object database.

A checkpoint changes a handful of files in a workspace of thousands; only
the directories on those paths are read (and cached: trees are immutable)
and rewritten, so a commit costs the same in a workspace of 100 files or
100,000. Mixed into :class:`pliny.checkpoints.git.GitRepo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TREE_MODE = "40000"
TREE_CACHE = 512


@dataclass(frozen=True)
class Entry:
    """One file in a tree: git mode ("100644", "100755", ...) and blob id."""

    mode: str
    sha: str


class TreeEditing:
    """Needs from the host class: ``prefix``, ``zero``, ``hash_name``, ``repo``,
    ``_trees`` (a dict), ``run(*args)`` and ``store_object(kind, data)``."""

    prefix: str
    zero: str
    hash_name: str
    repo: Any
    _trees: dict[str, dict[str, Entry]]

    def edit_tree(self, tree: str, changes: dict[str, Entry | None]) -> str:
        """``tree`` with workspace paths set (None removes them); returns the new tree id.

        Only the directories on the changed paths are read and rewritten, so the
        cost is flat in the size of the workspace (an index would be rewritten
        whole on every commit).
        """
        trie: dict[str, Any] = {}
        for path, entry in changes.items():
            parts = (self.prefix + path).split("/")
            node = trie
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = entry
        return self._edit(tree, trie) or self._write_tree({})

    def _edit(self, tree: str | None, trie: dict[str, Any]) -> str | None:
        entries = dict(self._tree_entries(tree)) if tree else {}
        for name, change in trie.items():
            if isinstance(change, dict):
                old = entries.get(name)
                old_tree = old.sha if old and old.mode == TREE_MODE else None
                sub = self._edit(old_tree, change)
                if sub is not None:  # (replaces a file of that name, like git does)
                    entries[name] = Entry(TREE_MODE, sub)
                elif old_tree is not None:
                    del entries[name]  # git stores no empty directories
            elif change is None:
                if name in entries and entries[name].mode != TREE_MODE:
                    del entries[name]  # removing a file never removes a directory
            else:
                entries[name] = change
        return self._write_tree(entries) if entries else None

    def entry_at(self, tree: str, path: str) -> Entry | None:
        """The entry for a workspace path in ``tree``, reading only the directories on it."""
        entry: Entry | None = Entry(TREE_MODE, tree)
        for part in (self.prefix + path).split("/"):
            if entry is None or entry.mode != TREE_MODE:
                return None
            entry = self._tree_entries(entry.sha).get(part)
        return entry

    def _tree_entries(self, tree: str) -> dict[str, Entry]:
        cached = self._trees.get(tree)
        if cached is not None:
            return cached
        if self.hash_name == "sha1":  # GitPython's persistent `cat-file --batch`
            data = self.repo.git.get_object_data(tree)[3]
        else:
            data = self.run("cat-file", "tree", tree)  # type: ignore[attr-defined]
        entries: dict[str, Entry] = {}
        pos, width = 0, len(self.zero) // 2
        while pos < len(data):
            space, nul = data.index(b" ", pos), data.index(b"\0", pos)
            name = data[space + 1 : nul].decode("utf-8", "surrogateescape")
            entries[name] = Entry(data[pos:space].decode(), data[nul + 1 : nul + 1 + width].hex())
            pos = nul + 1 + width
        self._remember_tree(tree, entries)
        return entries

    def _write_tree(self, entries: dict[str, Entry]) -> str:
        def order(name: str) -> bytes:  # git sorts a directory as if named "name/"
            raw = name.encode("utf-8", "surrogateescape")
            return raw + b"/" if entries[name].mode == TREE_MODE else raw

        data = b"".join(
            b"%s %s\0" % (entries[n].mode.encode(), n.encode("utf-8", "surrogateescape"))
            + bytes.fromhex(entries[n].sha)
            for n in sorted(entries, key=order)
        )
        tree = self.store_object("tree", data)  # type: ignore[attr-defined]
        self._remember_tree(tree, entries)
        return tree

    def _remember_tree(self, tree: str, entries: dict[str, Entry]) -> None:
        """Trees are immutable: keep recent ones so hot directories are never re-read."""
        if len(self._trees) >= TREE_CACHE:
            self._trees.pop(next(iter(self._trees)))  # FIFO is enough here
        self._trees[tree] = entries
