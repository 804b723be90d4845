"""The session lifecycle: options, the runner, run assembly, the store, views, rollback.

Named lifecycle, not session: ``pliny.session(id)`` is the public API.
"""
