"""The audit log: the log itself, writer, reader, summary."""
