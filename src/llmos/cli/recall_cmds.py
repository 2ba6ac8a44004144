"""`llmos recall`: search an agent's conversation history by words, by dates, or both.

    llmos recall AGENT QUERY [--start D] [--end D] [--page N] [--json]   words (in a range)
    llmos recall AGENT --start D [--end D] [--page N] [--json]           a range, oldest first

A client of `GET /v1/agents/{agent}/recall/search` and `.../recall/date`
(the agent's own `conversation_search` and `conversation_search_date`).
Dates are YYYY-MM-DD (a whole day) or an ISO time, as the route takes them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmos.cli import render
from llmos.cli.common import api, dump, fail, out
from llmos.client.base import seg


def recall(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name or id.")],
    query: Annotated[
        str | None, typer.Argument(help="Words to look for. \\[default: every message in range]")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="From this date (YYYY-MM-DD or ISO time).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="To this date, inclusive for a whole day.")
    ] = None,
    page: Annotated[int, typer.Option("--page", min=0, help="Page of results.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Search an agent's conversation history by words, by dates, or both.

    Example: llmos recall sam exam · llmos recall sam --start 2025-01-01 --end 2025-01-31
    """
    if not query and start is None and end is None:
        fail("give words to look for, or --start/--end (or both)")
    path = f"/agents/{seg(agent)}/recall/" + ("search" if query else "date")
    with api(ctx) as client:
        found = client.get(path, query=query, start=start, end=end, page=page)
    if as_json:
        dump(found)
    else:
        render.recall_view(out, found["results"], found["total"])
