"""Sessions: options, the runner (lifecycle), run assembly, the store, views, rollback."""
