"""The LLM layer: cores (one per kind of model server, plus the embedded model) behind one protocol.

`core.py` is the protocol and its request, response and error types;
`registry.py` makes a core from a model string; `models.py` knows what each
model takes and can do. Nothing here imports the layers above it.
"""
