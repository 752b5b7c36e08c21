"""The change feed over HTTP: GET /v1/changes (SPEC §6, §9).

`{"changes": [...], "next": SEQ}`: journal entries after `since` in `seq`
order, each as a line of `saleflow changes` (`serialise.change_json`), at
most `limit` of them (default 100, at most 500).  `next` is the `since` of
the following request: the last entry's `seq`, or, when the page is not
full, the journal's published position (so a filtered reader does not read
again what its filter passed over).  A client that keeps `next` misses
nothing and gets nothing twice (`saleflow.store.feed` says why); a page
with no changes means it has caught up, for now.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..views.serialise import change_json
from . import inputs
from .auth import Caller, reader
from .context import engine_of

router = APIRouter(tags=["changes"])


@router.get("/v1/changes", summary="Journal entries after a seq, in seq order (the change feed)")
def changes(
    request: Request,
    caller: Annotated[Caller, Depends(reader)],
    since: int = 0,
    limit: Annotated[int | None, Query(description=f"at most {inputs.MAX_PAGE}")] = None,
    kind: Annotated[list[str] | None, Query(description="kinds of entry; repeat for several")] = None,
    flow: str | None = None,
) -> dict[str, Any]:
    size = inputs.page_size(limit)
    feed = engine_of(request).changes(since, flow=inputs.name(flow, "flow"), kinds=kind, limit=size)
    page = [change_json(entry) for entry in feed]
    return {"changes": page, "next": feed.position}
