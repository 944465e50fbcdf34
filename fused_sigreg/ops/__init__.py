"""Public ops: argument checks, direction sampling, backend dispatch and the module wrappers."""
