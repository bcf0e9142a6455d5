// serving/static/sift-instantsearch.js under node's test runner, with a fake fetch standing in for the Sift API:
// what each InstantSearch request becomes, what each Sift response becomes, and the click path through the real
// search-insights bundle (serving/static/vendor/, from `make setup`). tests/test_instantsearch_client.py runs it.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";

import {
  createSiftInsightsClient,
  createSiftSearchClient,
  siftInsightsRequest,
  streamSummary,
  toHighlightResult,
  toSiftEvents,
  toSiftFilters,
} from "../../serving/static/sift-instantsearch.js";

const VENDOR = new URL("../../serving/static/vendor/", import.meta.url);
const PRE = "__ais-highlight__";
const POST = "__/ais-highlight__";

function siftResponse(over = {}) {
  return {
    query_id: "q1",
    query: "python",
    index: "docs",
    offset: 0,
    limit: 10,
    took_ms: 12.4,
    reranked: false,
    total_hits: 26,
    facets: { category: { guide: 12, reference: 8, tutorial: 6 }, level: { advanced: 17, beginner: 9 } },
    results: [
      {
        id: "d1",
        title: "Python <classes> & co",
        url: "https://example.org/1",
        score: 1.5,
        highlights: { title: ["<em>Python</em> &lt;classes&gt; &amp; co"], body: ["Use <em>Python</em>&#x27;s <em>classes</em>."] },
        fields: { category: "guide", level: "beginner" },
        explanation: { fused_score: 1.5, stages: ["bm25"] },
      },
    ],
    ...over,
  };
}

/** A fetch that records each call and answers from `answer(body, url)` (an object: 200 JSON; a Response: as is). */
function fakeFetch(answer = () => siftResponse()) {
  const calls = [];
  const f = async (url, init = {}) => {
    const body = init.body ? (String(init.body).startsWith("{") ? JSON.parse(init.body) : init.body) : undefined;
    calls.push({ url, init, body });
    const out = await answer(body, url);
    return out instanceof Response ? out : new Response(JSON.stringify(out), { status: 200 });
  };
  f.calls = calls;
  return f;
}

const main = (params = {}) => ({
  indexName: "docs",
  params: {
    query: "python",
    facets: ["category", "level"],
    highlightPreTag: PRE,
    highlightPostTag: POST,
    maxValuesPerFacet: 10,
    hitsPerPage: 10,
    page: 0,
    ...params,
  },
});
// What the helper sends for a refined disjunctive facet: its own refinement removed, no hits.
const disjunctive = (facet, params = {}) => ({
  indexName: "docs",
  params: { query: "python", facets: facet, hitsPerPage: 0, page: 0, analytics: false, clickAnalytics: false, maxValuesPerFacet: 10, ...params },
});

test("an empty query is answered without a request", async () => {
  const fetch = fakeFetch();
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  const { results } = await client.search([main({ query: "" })]);
  assert.equal(fetch.calls.length, 0);
  assert.equal(results[0].nbHits, 0);
  assert.deepEqual(results[0].hits, []);
});

test("a main request and its disjunctive request: one Sift search, Algolia's shape back", async () => {
  const fetch = fakeFetch();
  const client = createSiftSearchClient({ endpoint: "http://sift.test/", fetch, summarize: true, sessionId: "s1" });
  const { results } = await client.search([
    main({ facetFilters: [["category:reference", "category:tutorial"]], userToken: "anonymous-1" }),
    disjunctive("category"),
  ]);
  assert.equal(fetch.calls.length, 1);
  const { url, body } = fetch.calls[0];
  assert.equal(url, "http://sift.test/v1/search");
  assert.deepEqual(body, {
    query: "python",
    index: "docs",
    limit: 10,
    offset: 0,
    count: true,
    filters: [{ type: "terms", field: "category", values: ["reference", "tutorial"] }],
    facets: ["category", "level"],
    max_facet_values: 10,
    summarize: true,
    user_token: "anonymous-1",
    session_id: "s1",
  });
  const [r, d] = results;
  assert.equal(r.nbHits, 26);
  assert.equal(r.nbPages, 3);
  assert.equal(r.queryID, "q1");
  assert.equal(r.processingTimeMS, 12);
  assert.deepEqual(r.facets.category, { guide: 12, reference: 8, tutorial: 6 });
  const hit = r.hits[0];
  assert.equal(hit.objectID, "d1");
  assert.equal(hit.category, "guide");
  // Unescaped for InstantSearch, which escapes it again; the marks become its placeholders.
  assert.deepEqual(hit._highlightResult.title, {
    value: `${PRE}Python${POST} <classes> & co`,
    matchLevel: "full",
    matchedWords: ["python"],
    fullyHighlighted: false,
  });
  assert.equal(hit._snippetResult.body.value, `Use ${PRE}Python${POST}'s ${PRE}classes${POST}.`);
  assert.equal(hit.body, "Use Python's classes.");
  // The disjunctive request is answered from the main response's counts.
  assert.deepEqual(d.facets, { category: { guide: 12, reference: 8, tutorial: 6 } });
  assert.deepEqual(d.hits, []);
  assert.equal(client.stats.derived, 1);
});

test("a disjunctive request with other filters than the main one goes to Sift", async () => {
  const fetch = fakeFetch();
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  await client.search([
    main({ facetFilters: [["category:guide"], "level:beginner"] }),
    disjunctive("category", { facetFilters: ["level:advanced"] }),
  ]);
  assert.equal(fetch.calls.length, 2);
  assert.deepEqual(fetch.calls[1].body.filters, [{ type: "term", field: "level", value: "advanced" }]);
  assert.equal(fetch.calls[1].body.limit, 1);
  assert.equal(fetch.calls[1].body.highlight, false);
  assert.equal(fetch.calls[1].body.rerank, false);
});

test("a conjunctive refinement counts its own values as nbHits", async () => {
  const fetch = fakeFetch(() => siftResponse({ total_hits: 9 }));
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  const { results } = await client.search([main({ facetFilters: ["level:beginner"] })]);
  assert.deepEqual(results[0].facets.level, { beginner: 9 });
  assert.deepEqual(results[0].facets.category, { guide: 12, reference: 8, tutorial: 6 });
});

test("pages: offset from page and hitsPerPage, nbPages stops where Sift's offset does", async () => {
  const fetch = fakeFetch(() => siftResponse({ total_hits: 5000 }));
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  const { results } = await client.search([main({ page: 2 })]);
  assert.equal(fetch.calls[0].body.offset, 20);
  assert.equal(results[0].page, 2);
  assert.equal(results[0].nbPages, 101);
  await client.search([main({ page: 200 })]); // past the last page Sift serves: counts only, no hits
  assert.equal(fetch.calls[1].body.offset, 0);
  assert.equal(fetch.calls[1].body.limit, 1);
});

test("numeric filters and escaped values", () => {
  const out = toSiftFilters({
    facetFilters: ["tag:\\-1"],
    numericFilters: ["year>=2000", "year<2010", "price:1 TO 9", ["n=1", "n=2"]],
  }).map((f) => f.filter);
  assert.deepEqual(out, [
    { type: "term", field: "tag", value: "-1" },
    { type: "range", field: "year", gte: 2000 },
    { type: "range", field: "year", lt: 2010 },
    { type: "range", field: "price", gte: 1, lte: 9 },
    { type: "terms", field: "n", values: [1, 2] },
  ]);
});

test("what Sift cannot filter fails with a message, never a wider result", async () => {
  const bad = [
    { facetFilters: ["category:-guide"] },
    { facetFilters: [["category:guide", "level:beginner"]] },
    { numericFilters: ["year!=2000"] },
    { numericFilters: [["year<2000", "year>2010"]] },
    { filters: "category:guide OR level:beginner" },
    { tagFilters: ["x"] },
    { facets: ["*"] },
  ];
  const fetch = fakeFetch();
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  for (const params of bad) {
    await assert.rejects(client.search([main(params)]), { name: "SiftError" }, JSON.stringify(params));
  }
  assert.equal(fetch.calls.length, 0);
});

test("Sift's 422 detail reaches the error; failures are not cached", async () => {
  let n = 0;
  const detail = [{ loc: ["body", "facets", 0], msg: "unknown filter field 'colour'", type: "value_error" }];
  const fetch = fakeFetch(() => (n++ ? siftResponse() : new Response(JSON.stringify({ detail }), { status: 422 })));
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  await assert.rejects(client.search([main()]), (err) => err.status === 422 && /unknown filter field 'colour'/.test(err.message));
  const { results } = await client.search([main()]);
  assert.equal(results[0].nbHits, 26);
});

test("the same request again is served from the cache", async () => {
  const fetch = fakeFetch();
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  await client.search([main()]);
  await client.search([main()]);
  assert.equal(fetch.calls.length, 1);
  await client.clearCache();
  await client.search([main()]);
  assert.equal(fetch.calls.length, 2);
});

test("highlights with HTML tags stay escaped; match levels", () => {
  const r = toHighlightResult("a &lt;b&gt; <em>files</em>", "python files", "<em>", "</em>");
  assert.equal(r.value, "a &lt;b&gt; <em>files</em>");
  assert.equal(r.matchLevel, "partial");
  assert.deepEqual(r.matchedWords, ["files"]);
  assert.equal(toHighlightResult("no marks", "python").matchLevel, "none");
  // Sift matches stems: "running" lights up "runs"; stop words are not query words.
  assert.equal(toHighlightResult("<em>runs</em> fast", "the running", PRE, POST).matchLevel, "full");
});

test("searchForFacetValues: values with a word starting with the facet query, one Sift search", async () => {
  const fetch = fakeFetch(() => siftResponse({ facets: { module: { "os.path": 5, pathlib: 4, shutil: 2, "glob path": 1 } } }));
  const client = createSiftSearchClient({ endpoint: "http://sift.test", fetch });
  const ask = (facetQuery) =>
    client.searchForFacetValues([
      { indexName: "docs", params: { query: "python", facetName: "module", facetQuery, maxFacetHits: 10, highlightPreTag: PRE, highlightPostTag: POST } },
    ]);
  const [first] = await ask("pa");
  assert.deepEqual(first.facetHits, [
    { value: "os.path", highlighted: `os.${PRE}pa${POST}th`, count: 5 },
    { value: "pathlib", highlighted: `${PRE}pa${POST}thlib`, count: 4 },
    { value: "glob path", highlighted: `glob ${PRE}pa${POST}th`, count: 1 },
  ]);
  const [second] = await ask("sh");
  assert.deepEqual(second.facetHits.map((h) => h.value), ["shutil"]);
  assert.equal(fetch.calls.length, 1); // the facet query is matched here: the Sift request is the same
  assert.deepEqual(fetch.calls[0].body.facets, ["module"]);
  assert.equal(fetch.calls[0].body.max_facet_values, 100);
});

test("insights events in Sift's shape: clicks and conversions after a search only", () => {
  const events = toSiftEvents(
    [
      { eventType: "click", eventName: "Hit Clicked", index: "docs", queryID: "q1", objectIDs: ["d3"], positions: [13], userToken: "anonymous-9", timestamp: 5 },
      { eventType: "conversion", eventName: "Added", index: "docs", queryID: "q1", objectIDs: ["d3"], userToken: "u" },
      { eventType: "view", eventName: "Hits Viewed", index: "docs", objectIDs: ["d1", "d2"] },
      { eventType: "click", eventName: "Clicked", index: "docs", objectIDs: ["d1"] },
      { eventType: "instantsearch", eventName: "__start__", widgets: [] },
    ],
    { sessionId: "s1" },
  );
  assert.equal(events.length, 2);
  assert.deepEqual(events[0], {
    type: "click", event_name: "Hit Clicked", query_id: "q1", object_ids: ["d3"], timestamp: 5, positions: [13],
    user_token: "anonymous-9", session_id: "s1",
  });
  assert.equal(events[1].type, "conversion");
  assert.equal("positions" in events[1], false);
});

test("the insights transport posts to this Sift API only", async () => {
  const fetch = fakeFetch(() => new Response("{}", { status: 202 }));
  const send = siftInsightsRequest({ endpoint: "http://sift.test/api", apiKey: "pk", fetch });
  const click = { eventType: "click", eventName: "Hit Clicked", index: "docs", queryID: "q1", objectIDs: ["d1"], positions: [1] };
  assert.equal(await send("https://insights.algolia.io/1/events?X-Algolia-API-Key=pk", { events: [click] }), false);
  assert.equal(fetch.calls.length, 0);
  assert.equal(await send("http://sift.test/api/1/events?X-Algolia-API-Key=pk", { events: [click] }), true);
  assert.equal(fetch.calls[0].url, "http://sift.test/api/v1/events");
  assert.equal(fetch.calls[0].init.headers["X-API-Key"], "pk");
  assert.deepEqual(fetch.calls[0].body.events[0].object_ids, ["d1"]);
  assert.equal(await send("http://sift.test/api/1/events", { events: [{ ...click, eventType: "view" }] }), true);
  assert.equal(fetch.calls.length, 1); // nothing to send: no request
});

test("the real search-insights, pointed at Sift, sends a click to /v1/events", async () => {
  const bundle = new URL("search-insights.min.js", VENDOR);
  assert.ok(existsSync(bundle), "no serving/static/vendor/search-insights.min.js: run `make setup` (needs npm)");
  await import(bundle.href); // the UMD bundle the page loads: defines globalThis.AlgoliaAnalytics
  const fetch = fakeFetch(() => new Response("{}", { status: 202 }));
  const aa = createSiftInsightsClient({ endpoint: "http://sift.test", apiKey: "pk", userToken: "user-7", fetch });
  assert.match(aa.version, /^2\./);
  await aa("clickedObjectIDsAfterSearch", { eventName: "Hit Clicked", index: "docs", queryID: "q1", objectIDs: ["d3"], positions: [13] });
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.calls[0].url, "http://sift.test/v1/events");
  const [ev] = fetch.calls[0].body.events;
  assert.deepEqual([ev.type, ev.query_id, ev.object_ids, ev.positions, ev.user_token], ["click", "q1", ["d3"], [13], "user-7"]);
});

test("streamSummary reads SSE frames split anywhere", async () => {
  const frames =
    'event: token\ndata: {"text":"Hel"}\n\nevent: token\ndata: {"text":"lo"}\n\n' +
    'event: summary\ndata: {"text":"Hello [1].","sources":[{"n":1,"id":"d1","title":"T"}]}\n\n';
  const chunks = [frames.slice(0, 7), frames.slice(7, 40), frames.slice(40)];
  const body = new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(new TextEncoder().encode(ch));
      c.close();
    },
  });
  const fetch = fakeFetch(() => new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }));
  let tokens = "";
  const summary = await streamSummary("http://sift.test/v1/summarize?query_id=q1", { fetch, onToken: (t) => (tokens += t) });
  assert.equal(tokens, "Hello");
  assert.equal(summary.text, "Hello [1].");
  const failing = fakeFetch(() => new Response('event: error\ndata: {"detail":"boom","request_id":"r"}\n\n', { status: 200 }));
  await assert.rejects(streamSummary("http://sift.test/x", { fetch: failing }), /boom/);
});
