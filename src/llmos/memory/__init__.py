"""Memory: the agent image, core memory blocks, the context window, recall and archival storage."""
