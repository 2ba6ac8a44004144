"""The HTTP server: `create_app(kernel)` in `app.py`; routes in `routes/`."""
