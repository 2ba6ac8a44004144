"""The server's routers, one module per area: agents, messages, memory, kernel, openai."""
