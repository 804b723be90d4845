"""The audit log: writer, reader, summary, the secret scrubber."""
