"""I/O orchestration of one object: inputs -> decisions -> cloud calls -> status."""
