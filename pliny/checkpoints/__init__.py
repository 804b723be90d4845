"""Git checkpoints: store, refs, files, run state, the engine listener, git plumbing."""
