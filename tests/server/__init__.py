"""Tests of the HTTP server (`llmos serve`), through a real uvicorn on loopback."""
