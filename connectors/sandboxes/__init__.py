"""The sandboxes\x27 shared plumbing: the generated world, its history, and the standalone server."""
