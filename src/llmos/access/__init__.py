"""Access control: users, API keys and rate limits (`policy.py`), grants, approvals, audit."""
