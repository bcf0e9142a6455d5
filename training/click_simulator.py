"""The click simulator: searches through the real API (or the same service in-process) and clicks as a
simulated user would, so the impression and click logs it leaves are the ones production would.

Each session draws a query from one BEIR split, searches it, lets a `SimulatedUser` click from that split's
qrels (the only judgments it is given: it never reads another split), and sends one click event per click to
/v1/events. Session i draws from its own generator seeded by (seed, i), and its event ids are derived from
them: a rerun with the same seed is the same simulation, and events already stored are not stored again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from logs.events import EventRecorder, EventsBatch, EventsRejected
from search.service import SearchRequest
from training.click_profiles import RealisticProfile, RealisticUser, ZipfQueries, overlap
from training.click_users import SimulatedUser, UserConfig


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: int = Field(ge=1, description="Searches to simulate (one result page each).")
    seed: int = Field(default=0, description="Same seed, same sessions, same event ids.")
    limit: int = Field(default=10, ge=1, le=100, description="Results per page.")
    index: str | None = Field(default=None, description="Index searched (the server's default if None).")
    user: UserConfig = Field(
        default_factory=UserConfig, description="Behaviour and noise of the simulated user (`ideal` profile)."
    )
    profile: Literal["ideal", "realistic"] = Field(
        default="ideal",
        description="`ideal`: uniform query choice and `user`'s clicks from the qrels (tests, existing benches); "
        "`realistic`: Zipf query frequencies and `realistic`'s users (training/click_profiles.py).",
    )
    realistic: RealisticProfile = Field(
        default_factory=RealisticProfile, description="The realistic profile's parameters (used when selected)."
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Sessions in flight at once.")
    batch_events: int = Field(default=200, ge=1, le=1000, description="Click events per POST /v1/events.")
    progress: bool = Field(default=True, description="Show a progress bar.")


class Page(BaseModel):
    query_id: str
    shown: list[str]
    offset: int = 0
    texts: list[str] | None = Field(default=None, description="Title and snippet of each shown result, as shown.")


def _shown_text(title: str, highlights: Mapping[str, list[str]]) -> str:
    return " ".join([title, *(f for frags in highlights.values() for f in frags)])


class SearchClient(Protocol):
    """Where the simulator searches and sends events: the HTTP API, or the same service in-process."""

    async def search(self, req: SearchRequest) -> Page: ...

    async def send(self, events: list[dict[str, Any]]) -> None: ...


class HttpClient:
    """The real API over HTTP: POST /v1/search and POST /v1/events."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        import httpx

        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def search(self, req: SearchRequest) -> Page:
        r = await self._http.post("/v1/search", json=req.model_dump(mode="json", exclude_none=True))
        if r.status_code != 200:
            raise RuntimeError(f"search failed ({r.status_code}): {r.text[:300]}")
        body = r.json()
        results = body["results"]
        texts = [_shown_text(x.get("title") or "", x.get("highlights") or {}) for x in results]
        return Page(query_id=body["query_id"], shown=[x["id"] for x in results], offset=body["offset"], texts=texts)

    async def send(self, events: list[dict[str, Any]]) -> None:
        r = await self._http.post("/v1/events", json={"events": events})
        if r.status_code != 202:
            raise RuntimeError(f"events refused ({r.status_code}): {r.text[:300]}")

    async def aclose(self) -> None:
        await self._http.aclose()


class InProcessClient:
    """The service and event recorder of an API process, called directly (large runs): `search` must log
    the impression as /v1/search does (`logs.events.impression_for`)."""

    def __init__(self, search: Callable[[SearchRequest], Awaitable[Page]], recorder: EventRecorder) -> None:
        self._search = search
        self._recorder = recorder

    async def search(self, req: SearchRequest) -> Page:
        return await self._search(req)

    async def send(self, events: list[dict[str, Any]]) -> None:
        try:
            await self._recorder.record(EventsBatch.model_validate({"events": events}))
        except EventsRejected as exc:
            raise RuntimeError(f"events refused: {exc.errors[:3]}") from exc

    async def aclose(self) -> None:
        return None


class SimulationReport(BaseModel):
    sessions: int
    clicks: int
    seconds: float
    sessions_per_s: float
    clicks_by_position: list[int] = Field(description="Clicks at positions 1..limit.")
    no_click_sessions: int = Field(default=0, description="Sessions with no click (abandoned or found nothing).")


def _click_events(page: Page, clicks: np.ndarray, session: str, seed: int, i: int) -> list[dict[str, Any]]:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    return [
        {
            "type": "click",
            "event_name": "Result clicked",
            "query_id": page.query_id,
            "object_ids": [page.shown[r]],
            "positions": [page.offset + r + 1],
            "session_id": session,
            "user_token": session,
            "timestamp": now_ms,
            "event_id": f"sim-{seed}-{i}-{r + 1}",
        }
        for r in (int(x) for x in np.flatnonzero(clicks))
    ]


async def simulate(
    client: SearchClient,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    config: SimulatorConfig,
) -> SimulationReport:
    """Run `config.sessions` sessions over the queries that have judgments in `qrels` (one split's)."""
    qids = sorted(q for q in qrels if q in queries and queries[q].strip())
    if not qids:
        raise ValueError("no query has both text and judgments in this split")
    user = SimulatedUser(config.user)
    realistic = config.profile == "realistic"
    real_user = RealisticUser(config.realistic)
    zipf = ZipfQueries(qids, config.realistic.zipf_exponent, config.seed) if realistic else None
    pending: list[dict[str, Any]] = []
    by_position = [0] * config.limit
    no_click = 0
    send_lock = asyncio.Lock()
    sem = asyncio.Semaphore(config.concurrency)
    bar = tqdm(total=config.sessions, unit="session", disable=not config.progress, desc="simulating")

    async def flush(force: bool) -> None:
        async with send_lock:
            while pending and (force or len(pending) >= config.batch_events):
                batch = pending[: config.batch_events]
                await client.send(batch)
                del pending[: len(batch)]

    async def one(i: int) -> None:
        async with sem:
            nonlocal no_click
            rng = np.random.default_rng([config.seed, i])
            qid = zipf.draw(rng) if zipf is not None else qids[int(rng.integers(len(qids)))]
            session = f"sim-{config.seed}-{i}"
            req = SearchRequest(
                query=" ".join(queries[qid].split())[:1000],
                index=config.index,
                limit=config.limit,
                session_id=session,
                user_token=session,
                highlight=realistic,  # realistic users read the title and snippet
            )
            page = await client.search(req)
            if not page.shown:
                clicks = np.zeros(0, dtype=bool)
            elif realistic:
                shown = page.texts or [""] * len(page.shown)
                clicks = real_user.clicks(page.shown, qrels[qid], [overlap(req.query, t) for t in shown], rng)
            else:
                clicks = user.clicks(page.shown, qrels[qid], rng)
            for r in np.flatnonzero(clicks):
                by_position[r] += 1
            no_click += not clicks.any()
            pending.extend(_click_events(page, clicks, session, config.seed, i))
            bar.update(1)
        await flush(False)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(config.sessions)))
        await flush(True)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return SimulationReport(
        sessions=config.sessions,
        clicks=sum(by_position),
        seconds=round(seconds, 3),
        sessions_per_s=round(config.sessions / seconds, 1) if seconds else 0.0,
        clicks_by_position=by_position,
        no_click_sessions=no_click,
    )
