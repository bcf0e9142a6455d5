/**
 * sift-instantsearch.js — InstantSearch.js 4.x on a Sift API: a search client (InstantSearch's search-client
 * interface, Algolia's response shape) over POST /v1/search, an insights client that sends clicks to
 * POST /v1/events, and a reader for the cited summary stream. A dependency-free ES module.
 *
 *   import { createSiftSearchClient, createSiftInsightsClient } from "https://search.example.org/widget/sift-instantsearch.js";
 *
 *   const searchClient = createSiftSearchClient({
 *     endpoint: "https://search.example.org", // API base URL; "" = same origin (other origins: `cors_origins`)
 *     apiKey: undefined,      // a public key (scopes search, suggest, events), sent as X-API-Key
 *     searchParams: {},       // extra /v1/search fields for every request (mode, fusion, rerank, ...)
 *     filters: [],            // Sift filters added to every request ({type: "term", field, value}, ...)
 *     summarize: false,       // ask for `summary_url` on the first page (results[i].sift.summaryUrl)
 *     sessionId: undefined,   // sent as session_id with searches and events
 *     cacheSize: 50,          // responses kept (by request body) so going back costs no request
 *   });
 *   const search = instantsearch({ indexName: "docs", searchClient }); // "_default": the server's default index
 *   search.use(instantsearch.middlewares.createInsightsMiddleware({
 *     insightsClient: createSiftInsightsClient({ endpoint: "https://search.example.org" }),
 *   }));
 *
 * What maps to what (Algolia parameter -> Sift):
 *   query -> query (an empty query is answered here with no hits and no request: Sift needs words)
 *   page, hitsPerPage -> offset = page * hitsPerPage, limit (at most 100; Sift's offset stops at 1000, so
 *     nbPages stops there too, as Algolia's paginationLimitedTo does)
 *   facets -> facets (named attributes; "*" cannot be served), maxValuesPerFacet -> max_facet_values
 *   facetFilters: "attr:value" -> a term filter; an OR array ["attr:a", "attr:b"] on one attribute -> a terms
 *     filter; a leading "\-" is a literal minus. Negations ("attr:-value") and ORs across attributes have no Sift
 *     filter: the search fails with a message rather than return a wider result set.
 *   numericFilters: "attr>=1", "attr<2", "attr=3", "attr:1 TO 9" -> range / term filters; OR arrays of "=" on one
 *     attribute -> a terms filter; "!=" fails as a negation does. Algolia's `filters` string and `tagFilters` fail
 *     too; ranking-only hints (optionalFilters, ...) are ignored.
 *   userToken -> user_token; the response's query_id -> queryID (with clickAnalytics, hits get __queryID)
 *   total_hits -> nbHits, nbPages; facets -> facets; took_ms -> processingTimeMS
 *   highlights -> _highlightResult.title / .body and _snippetResult.body ({value, matchLevel, matchedWords}),
 *     Sift's <em> marks replaced by the request's highlightPreTag / highlightPostTag.
 * Each result also carries `sift`: the query_id, corrected_query, did_you_mean, summaryUrl and rerank notes.
 *
 * Disjunctive facets: for a refinementList with operator "or", InstantSearch sends, beside the main request, one
 * request per refined facet with that facet's own refinements removed and hitsPerPage 0, to count the values a
 * user could still add. Sift counts every facet that way already (a facet's counts ignore the filters on its own
 * field), so the main response holds those counts: such a request is answered from it, with no round trip and no
 * second impression in the query log, whenever its filters on every other field equal the main request's (then
 * both counts are over the same documents). Anything else (another query, other filters) is sent to Sift itself.
 * Conjunctive facets (operator "and") are counted over the refined result by Algolia; Sift's counts ignore the
 * facet's own filter, so for a facet refined conjunctively only its refined values are returned, counted as
 * nbHits (every hit has them): exact for single-valued fields, where no other value can co-occur.
 *
 * Safety: Sift's highlights are HTML-escaped text with <em> marks. With InstantSearch's own placeholder tags
 * (escapeHTML, its default) the text is unescaped here because InstantSearch escapes it again; with tags that
 * are HTML (custom highlightPreTag "<em>", escapeHTML: false) it stays escaped, so no document text becomes markup.
 */

const DEFAULTS = {
  endpoint: "",
  apiKey: undefined,
  searchParams: {},
  filters: [],
  summarize: false,
  sessionId: undefined,
  cacheSize: 50,
  fetch: undefined,
};

/** The indexName meaning the server's default index (InstantSearch sends nothing for an empty indexName). */
export const DEFAULT_INDEX = "_default";
export const MAX_LIMIT = 100; // /v1/search `limit`
export const MAX_OFFSET = 1000; // /v1/search `offset`
export const MAX_FACET_VALUES = 100; // /v1/search `max_facet_values`
const DEFAULT_HITS_PER_PAGE = 20; // Algolia's default
const DEFAULT_MAX_VALUES = 10;
const DEFAULT_PRE = "<em>"; // Algolia's defaults, used when a request names no tags
const DEFAULT_POST = "</em>";
// Lucene's English stop set, as search/text.py drops it from queries: such words are never marked.
const STOPWORDS = new Set(
  ("a an and are as at be but by for if in into is it no not of on or such that the their then there " +
    "these they this to was will with").split(" "),
);
const WORD = /[\p{L}\p{N}_]+/gu;

/** A failed request: `status` is the HTTP status (0: the network), `message` Sift's detail. */
export class SiftError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "SiftError";
    this.status = status;
  }
}

function baseUrl(endpoint) {
  return String(endpoint || "").replace(/\/+$/, "");
}

async function errorDetail(resp) {
  try {
    const body = await resp.json();
    const d = body?.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return JSON.stringify(d ?? body);
  } catch {
    return "";
  }
}

// ---- parameters ------------------------------------------------------------------------------------------------

function asList(v) {
  if (v === undefined || v === null || v === "") return [];
  if (Array.isArray(v)) return v;
  if (typeof v === "string") {
    const s = v.trim();
    if (s.startsWith("[")) return JSON.parse(s);
    return s.split(",").map((x) => x.trim()).filter(Boolean);
  }
  return [v];
}

/** Params as an object (InstantSearch 4 sends objects; older clients a query string with JSON values). */
export function paramsObject(params) {
  if (!params) return {};
  if (typeof params !== "string") return params;
  const out = {};
  for (const [k, v] of new URLSearchParams(params)) {
    try {
      out[k] = JSON.parse(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

function splitFacetFilter(s) {
  if (typeof s !== "string") throw new SiftError(`facetFilters: expected "attribute:value", got ${JSON.stringify(s)}`);
  const i = s.indexOf(":");
  if (i <= 0) throw new SiftError(`facetFilters: expected "attribute:value", got ${JSON.stringify(s)}`);
  const field = s.slice(0, i);
  let value = s.slice(i + 1);
  if (value.startsWith("-")) {
    throw new SiftError(`facetFilters: Sift has no negative filter (${JSON.stringify(s)})`);
  }
  if (value.startsWith("\\-")) value = value.slice(1); // InstantSearch escapes a value's leading minus
  return [field, value];
}

const NUMERIC = /^\s*(.+?)\s*(<=|>=|!=|<|>|=)\s*(-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*$/i;
const NUMERIC_RANGE = /^\s*(.+?)\s*:\s*(-?[\d.e+-]+)\s+TO\s+(-?[\d.e+-]+)\s*$/i;

function parseNumeric(s) {
  if (typeof s !== "string") throw new SiftError(`numericFilters: expected a string, got ${JSON.stringify(s)}`);
  let m = NUMERIC_RANGE.exec(s);
  if (m) {
    const [lo, hi] = [Number(m[2]), Number(m[3])];
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new SiftError(`numericFilters: cannot read ${JSON.stringify(s)}`);
    return { field: m[1], op: "range", value: [lo, hi] };
  }
  m = NUMERIC.exec(s);
  if (!m) throw new SiftError(`numericFilters: cannot read ${JSON.stringify(s)}`);
  if (m[2] === "!=") throw new SiftError(`numericFilters: Sift has no negative filter (${JSON.stringify(s)})`);
  return { field: m[1], op: m[2], value: Number(m[3]) };
}

function numericFilter({ field, op, value }) {
  if (op === "range") return { type: "range", field, gte: value[0], lte: value[1] };
  if (op === "=") return { type: "term", field, value };
  return { type: "range", field, [{ "<": "lt", "<=": "lte", ">": "gt", ">=": "gte" }[op]]: value };
}

/**
 * Algolia's facetFilters and numericFilters as Sift filters: [{field, filter, conjunctive}], where
 * `conjunctive` marks a facet refined with AND (a plain string), as opposed to an OR array.
 */
export function toSiftFilters(params) {
  const out = [];
  for (const f of asList(params.facetFilters)) {
    if (Array.isArray(f)) {
      if (!f.length) continue;
      const pairs = f.map(splitFacetFilter);
      const fields = new Set(pairs.map(([field]) => field));
      if (fields.size > 1) {
        throw new SiftError(`facetFilters: Sift cannot OR filters on different attributes (${[...fields].join(", ")})`);
      }
      const [field] = pairs[0];
      const values = [...new Set(pairs.map(([, v]) => v))];
      const filter = values.length === 1 ? { type: "term", field, value: values[0] } : { type: "terms", field, values };
      out.push({ field, filter, conjunctive: false });
    } else {
      const [field, value] = splitFacetFilter(f);
      out.push({ field, filter: { type: "term", field, value }, conjunctive: true });
    }
  }
  for (const f of asList(params.numericFilters)) {
    if (Array.isArray(f)) {
      if (!f.length) continue;
      const parsed = f.map(parseNumeric);
      const fields = new Set(parsed.map((p) => p.field));
      if (fields.size === 1 && parsed.every((p) => p.op === "=")) {
        const field = parsed[0].field;
        const values = [...new Set(parsed.map((p) => p.value))];
        const filter = values.length === 1 ? { type: "term", field, value: values[0] } : { type: "terms", field, values };
        out.push({ field, filter, conjunctive: false });
      } else if (parsed.length === 1) {
        out.push({ field: parsed[0].field, filter: numericFilter(parsed[0]), conjunctive: false });
      } else {
        throw new SiftError(`numericFilters: Sift cannot OR ranges (${JSON.stringify(f)})`);
      }
    } else {
      const p = parseNumeric(f);
      out.push({ field: p.field, filter: numericFilter(p), conjunctive: false });
    }
  }
  if (typeof params.filters === "string" && params.filters.trim()) {
    throw new SiftError("`filters` (Algolia's filter string) is not supported; use facetFilters / numericFilters");
  }
  if (asList(params.tagFilters).length) throw new SiftError("`tagFilters` is not supported by Sift");
  return out;
}

function facetNames(params) {
  const names = asList(params.facets).map(String);
  if (names.includes("*")) throw new SiftError('facets: ["*"] cannot be served; name the attributes to count');
  return [...new Set(names)];
}

function clampInt(v, lo, hi, dflt) {
  const n = Number(v);
  if (!Number.isFinite(n)) return dflt;
  return Math.min(hi, Math.max(lo, Math.trunc(n)));
}

function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** What one InstantSearch request asks, parsed once: the Sift body and what the response must look like. */
function plan(request, opts) {
  const params = paramsObject(request.params);
  const query = String(params.query ?? "");
  const hitsPerPage = clampInt(params.hitsPerPage, 0, 1000, DEFAULT_HITS_PER_PAGE);
  const page = clampInt(params.page, 0, 1e9, 0);
  const filters = toSiftFilters(params);
  const facets = facetNames(params);
  const maxValues = clampInt(params.maxValuesPerFacet, 1, MAX_FACET_VALUES, DEFAULT_MAX_VALUES);
  const limit = Math.min(hitsPerPage, MAX_LIMIT);
  const offset = page * hitsPerPage;
  const wantsHits = limit > 0 && offset <= MAX_OFFSET;
  const p = {
    request,
    params,
    indexName: request.indexName ?? "",
    query,
    page,
    hitsPerPage,
    filters,
    facets,
    maxValues,
    wantsHits,
    preTag: typeof params.highlightPreTag === "string" ? params.highlightPreTag : DEFAULT_PRE,
    postTag: typeof params.highlightPostTag === "string" ? params.highlightPostTag : DEFAULT_POST,
    conjunctive: new Set(filters.filter((f) => f.conjunctive).map((f) => f.field)),
    body: null,
  };
  if (!query.trim()) return p; // answered here: Sift needs words
  const body = { ...opts.searchParams, query, limit: wantsHits ? limit : 1, offset: wantsHits ? offset : 0, count: true };
  if (p.indexName && p.indexName !== DEFAULT_INDEX) body.index = p.indexName;
  const extra = Array.isArray(opts.filters) ? opts.filters : [];
  const own = Array.isArray(opts.searchParams?.filters) ? opts.searchParams.filters : [];
  if (extra.length || own.length || filters.length) body.filters = [...own, ...extra, ...filters.map((f) => f.filter)];
  if (facets.length) {
    body.facets = facets;
    body.max_facet_values = maxValues;
  }
  const highlight = asList(params.attributesToHighlight);
  if (!wantsHits || (Array.isArray(params.attributesToHighlight) && highlight.length === 0)) body.highlight = false;
  if (!wantsHits) body.rerank = false;
  if (opts.summarize && wantsHits && page === 0) body.summarize = true;
  const user = params.userToken ?? opts.userToken;
  if (user !== undefined && user !== null && user !== "") body.user_token = String(user);
  if (opts.sessionId) body.session_id = String(opts.sessionId);
  p.body = body;
  return p;
}

/** The filters of a plan on every field but `field`, as one comparable string. */
function filtersBesides(p, field) {
  return p.filters
    .filter((f) => f.field !== field)
    .map((f) => canonical(f.filter))
    .sort()
    .join("|");
}

/** Whether a hitsPerPage-0 request `r` can take its facet counts from request `m` of the same batch. */
function answersFacetsOf(m, r) {
  if (!m.body || !r.body || m === r || r.wantsHits) return false;
  if (m.indexName !== r.indexName || m.query !== r.query) return false;
  if (!r.facets.length || r.maxValues > m.maxValues) return false;
  return r.facets.every(
    (f) => m.facets.includes(f) && !r.conjunctive.has(f) && !m.conjunctive.has(f) && filtersBesides(m, f) === filtersBesides(r, f),
  );
}

// ---- highlighting ----------------------------------------------------------------------------------------------

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", "#x27": "'", "#39": "'" };

/** Undo Python's html.escape (what search/highlight.py applies), plus numeric references. */
export function unescapeHtml(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    const k = e.toLowerCase();
    if (k in ENTITIES) return ENTITIES[k];
    if (k.startsWith("#x")) return String.fromCodePoint(parseInt(k.slice(2), 16));
    if (k.startsWith("#")) return String.fromCodePoint(parseInt(k.slice(1), 10));
    return m;
  });
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" })[c]);
}

function queryWords(query) {
  return [...new Set((String(query).toLowerCase().match(WORD) || []).filter((w) => !STOPWORDS.has(w)))];
}

/** Sift matched `word` for query word `q`: Sift matches on stems, so a shared prefix of 3+ letters counts. */
function sameStem(q, word) {
  if (q === word) return true;
  const n = Math.min(q.length, word.length);
  if (n < 3) return false;
  let i = 0;
  while (i < n && q[i] === word[i]) i++;
  return i >= Math.min(n, Math.max(3, Math.min(q.length, word.length) - 2));
}

/**
 * Sift's highlight markup (HTML-escaped text, matches in <em>) as an Algolia highlight result: the matches wrapped
 * in `pre` / `post`; the text unescaped unless the tags are HTML (see the module's note on safety).
 */
export function toHighlightResult(siftHtml, query, pre = DEFAULT_PRE, post = DEFAULT_POST) {
  const html = /[<>]/.test(pre + post);
  const text = (s) => (html ? s : unescapeHtml(s));
  let value = "";
  const matched = [];
  let pos = 0;
  let open = false;
  for (const m of String(siftHtml).matchAll(/<(\/?)em>/g)) {
    const chunk = siftHtml.slice(pos, m.index);
    if (open) matched.push(unescapeHtml(chunk).toLowerCase());
    value += text(chunk);
    value += m[1] ? (open ? post : "") : open ? "" : pre;
    open = !m[1];
    pos = m.index + m[0].length;
  }
  value += text(siftHtml.slice(pos));
  if (open) value += post;
  const words = queryWords(query);
  const matchedWords = words.filter((q) => matched.some((w) => sameStem(q, w)));
  let matchLevel = "none";
  if (matched.length) matchLevel = words.length && matchedWords.length === words.length ? "full" : "partial";
  return { value, matchLevel, matchedWords, fullyHighlighted: false };
}

function plainHighlight(s, pre, post) {
  const html = /[<>]/.test(pre + post);
  return { value: html ? escapeHtml(String(s ?? "")) : String(s ?? ""), matchLevel: "none", matchedWords: [] };
}

function stripMarks(siftHtml) {
  return unescapeHtml(String(siftHtml).replace(/<\/?em>/g, ""));
}

// ---- responses -------------------------------------------------------------------------------------------------

function toHit(r, p, words) {
  const hl = r.highlights || {};
  const hit = { ...(r.fields || {}), objectID: String(r.id), title: r.title ?? "", url: r.url ?? null };
  const title = hl.title?.[0];
  const body = hl.body?.length ? hl.body.join(" … ") : null;
  hit._highlightResult = {
    title: title != null ? toHighlightResult(title, words, p.preTag, p.postTag) : plainHighlight(hit.title, p.preTag, p.postTag),
  };
  if (body != null) {
    hit.body = stripMarks(body);
    hit._highlightResult.body = toHighlightResult(body, words, p.preTag, p.postTag);
    hit._snippetResult = { body: { ...hit._highlightResult.body } };
  }
  hit._sift = { score: r.score, explanation: r.explanation };
  return hit;
}

/** Counts of a facet refined conjunctively: only its refined values, each on every hit. */
function conjunctiveCounts(p, field, nbHits) {
  const refined = p.filters.filter((f) => f.field === field && f.conjunctive).map((f) => String(f.filter.value));
  return Object.fromEntries(refined.map((v) => [v, nbHits]));
}

function facetsFor(p, siftFacets, nbHits) {
  const out = {};
  for (const name of p.facets) {
    if (p.conjunctive.has(name)) out[name] = conjunctiveCounts(p, name, nbHits);
    else if (siftFacets && siftFacets[name]) out[name] = { ...siftFacets[name] };
  }
  return out;
}

function paramsString(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) q.set(k, typeof v === "string" ? v : JSON.stringify(v));
  return q.toString();
}

function emptyResult(p) {
  return {
    hits: [],
    nbHits: 0,
    page: p.page,
    nbPages: 0,
    hitsPerPage: p.hitsPerPage,
    processingTimeMS: 0,
    query: p.query,
    params: paramsString(p.params),
    index: p.indexName,
    exhaustiveNbHits: true,
    exhaustiveFacetsCount: true,
    exhaustive: { nbHits: true, facetsCount: true },
    facets: {},
    renderingContent: {},
    sift: null,
  };
}

function toResult(p, s, base) {
  const shown = p.wantsHits ? s.results || [] : [];
  const exact = typeof s.total_hits === "number";
  // Without total_hits (a server before facets), at least what was seen, and one more page while pages are full.
  const nbHits = exact ? s.total_hits : p.page * p.hitsPerPage + shown.length + (shown.length >= p.hitsPerPage ? 1 : 0);
  const perPage = Math.max(1, p.hitsPerPage);
  const nbPages = p.hitsPerPage ? Math.min(Math.ceil(nbHits / perPage), Math.floor(MAX_OFFSET / perPage) + 1) : 0;
  const words = s.corrected_query || p.query;
  const result = {
    ...emptyResult(p),
    hits: shown.map((r) => toHit(r, p, words)),
    nbHits,
    nbPages,
    processingTimeMS: Math.round(s.took_ms || 0),
    exhaustiveNbHits: exact,
    exhaustive: { nbHits: exact, facetsCount: true },
    facets: facetsFor(p, s.facets, nbHits),
    sift: {
      queryId: s.query_id ?? null,
      index: s.index ?? null,
      correctedQuery: s.corrected_query ?? null,
      didYouMean: s.did_you_mean ?? null,
      summaryUrl: s.summary_url ? `${base}${s.summary_url}` : null,
      reranked: Boolean(s.reranked),
      rerankNote: s.rerank_note ?? null,
      retrievalNote: s.retrieval_note ?? null,
      tookMs: s.took_ms ?? null,
    },
  };
  if (p.wantsHits && s.query_id) result.queryID = s.query_id;
  return result;
}

function derivedResult(r, main, mainResult) {
  const facets = {};
  for (const name of r.facets) {
    const counts = Object.entries(main.raw.facets?.[name] || {}).slice(0, r.maxValues);
    facets[name] = Object.fromEntries(counts);
  }
  return {
    ...emptyResult(r),
    nbHits: mainResult.nbHits,
    exhaustiveNbHits: false, // not this request's own count: InstantSearch reads only its facets
    exhaustive: { nbHits: false, facetsCount: true },
    processingTimeMS: 0,
    facets,
    sift: { ...mainResult.sift, derivedFrom: "main request" },
  };
}

// ---- the clients -----------------------------------------------------------------------------------------------

/** Create InstantSearch's search client for the Sift API at `options.endpoint` (see the module comment). */
export function createSiftSearchClient(options = {}) {
  const opts = { ...DEFAULTS, ...options };
  const base = baseUrl(opts.endpoint);
  const doFetch = opts.fetch || ((...a) => globalThis.fetch(...a));
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (opts.apiKey) headers["X-API-Key"] = String(opts.apiKey);
  const cache = new Map(); // body -> Promise of Sift's response (kept in insertion order: oldest first)
  const stats = { requests: 0, derived: 0, cached: 0, local: 0 };

  function siftSearch(body) {
    const key = canonical(body);
    const hit = cache.get(key);
    if (hit) {
      stats.cached++;
      cache.delete(key);
      cache.set(key, hit);
      return hit;
    }
    stats.requests++;
    const pending = (async () => {
      let resp;
      try {
        resp = await doFetch(`${base}/v1/search`, { method: "POST", headers, body: JSON.stringify(body) });
      } catch (err) {
        throw new SiftError(`Sift search failed: ${err?.message || err}`, 0);
      }
      if (!resp.ok) {
        const detail = await errorDetail(resp);
        throw new SiftError(`Sift search failed: HTTP ${resp.status}${detail ? `: ${detail}` : ""}`, resp.status);
      }
      return resp.json();
    })();
    if (opts.cacheSize > 0) {
      cache.set(key, pending);
      pending.catch(() => cache.delete(key)); // failures are never cached
      while (cache.size > opts.cacheSize) cache.delete(cache.keys().next().value);
    }
    return pending;
  }

  async function search(requests) {
    const plans = requests.map((r) => plan(r, opts));
    const mains = plans.filter((p) => p.body && p.wantsHits);
    const sources = plans.map((p) => (p.body && !p.wantsHits ? mains.find((m) => answersFacetsOf(m, p)) : undefined));
    const raws = await Promise.all(plans.map((p, i) => (p.body && !sources[i] ? siftSearch(p.body) : null)));
    plans.forEach((p, i) => {
      p.raw = raws[i];
    });
    const results = plans.map((p) => (p.raw ? toResult(p, p.raw, base) : null));
    return {
      results: plans.map((p, i) => {
        if (results[i]) return results[i];
        if (sources[i]) {
          stats.derived++;
          const m = sources[i];
          return derivedResult(p, m, results[plans.indexOf(m)]);
        }
        stats.local++;
        return emptyResult(p);
      }),
    };
  }

  /** Values of one facet containing a word that starts with `facetQuery`, from at most 100 counted values. */
  async function searchForFacetValues(requests) {
    return Promise.all(
      requests.map(async (request) => {
        const params = paramsObject(request.params);
        const facet = String(params.facetName ?? request.facet ?? "");
        const needle = String(params.facetQuery ?? "").toLowerCase();
        const max = clampInt(params.maxFacetHits, 1, MAX_FACET_VALUES, 10);
        const p = plan({ indexName: request.indexName, params: { ...params, facets: [facet], hitsPerPage: 0, maxValuesPerFacet: MAX_FACET_VALUES } }, opts);
        if (!facet || !p.body) return { facetHits: [], exhaustiveFacetsCount: true, processingTimeMS: 0 };
        const s = await siftSearch(p.body);
        const counts = Object.entries(s.facets?.[facet] || {});
        const pre = p.preTag;
        const post = p.postTag;
        const html = /[<>]/.test(pre + post);
        const esc = (x) => (html ? escapeHtml(x) : x);
        const facetHits = [];
        for (const [value, count] of counts) {
          const lower = value.toLowerCase();
          let at = -1;
          if (!needle) at = 0;
          else {
            for (const m of lower.matchAll(WORD)) {
              if (lower.startsWith(needle, m.index)) {
                at = m.index;
                break;
              }
            }
            if (at < 0 && lower.startsWith(needle)) at = 0;
          }
          if (at < 0) continue;
          const n = needle.length;
          const highlighted = n
            ? esc(value.slice(0, at)) + pre + esc(value.slice(at, at + n)) + post + esc(value.slice(at + n))
            : esc(value);
          facetHits.push({ value, highlighted, count });
          if (facetHits.length >= max) break;
        }
        return {
          facetHits,
          exhaustiveFacetsCount: counts.length < MAX_FACET_VALUES,
          processingTimeMS: Math.round(s.took_ms || 0),
        };
      }),
    );
  }

  return {
    search,
    searchForFacetValues,
    clearCache() {
      cache.clear();
      return Promise.resolve();
    },
    // What InstantSearch's insights middleware reads for `init` (a v5 client's fields); never sent to Algolia.
    appId: "sift",
    apiKey: opts.apiKey ? String(opts.apiKey) : "public",
    endpoint: base,
    stats,
  };
}

/**
 * Algolia Insights events (what search-insights sends) as Sift's /v1/events events. Clicks and conversions
 * after a search carry Sift's query_id and go through; views, events without a queryID and InstantSearch's own
 * usage events are dropped: Sift logs what a search showed (the impression) itself.
 */
export function toSiftEvents(events, { sessionId } = {}) {
  const out = [];
  for (const e of Array.isArray(events) ? events : []) {
    if (!e || !e.queryID || !Array.isArray(e.objectIDs) || !e.objectIDs.length) continue;
    if (e.eventType !== "click" && e.eventType !== "conversion") continue;
    if (e.eventType === "click" && !Array.isArray(e.positions)) continue;
    const ev = {
      type: e.eventType,
      event_name: String(e.eventName || (e.eventType === "click" ? "Hit Clicked" : "Hit Converted")).slice(0, 64),
      query_id: String(e.queryID),
      object_ids: e.objectIDs.map(String),
      timestamp: typeof e.timestamp === "number" ? e.timestamp : Date.now(),
    };
    if (e.eventType === "click") ev.positions = e.positions.map(Number);
    const user = e.authenticatedUserToken || e.userToken;
    if (user) ev.user_token = String(user).slice(0, 200);
    if (sessionId) ev.session_id = String(sessionId);
    out.push(ev);
  }
  return out;
}

/**
 * search-insights' transport (`createInsightsClient(requestFn)`) for Sift: search-insights builds
 * `<host>/1/events?...` with the `host` given to `init`; this sends the batch, in Sift's shape, to
 * `<host>/v1/events` instead, and refuses any other host (so nothing ever reaches Algolia's servers).
 * Without an API key it uses navigator.sendBeacon (survives a click that navigates away; a text/plain body
 * needs no CORS preflight); with one, fetch with keepalive and X-API-Key.
 */
export function siftInsightsRequest({ endpoint, apiKey, sessionId, fetch: fetchFn } = {}) {
  const origin = absoluteBase(endpoint);
  return function requestFn(url, data) {
    const target = String(url).split("?")[0];
    if (target !== `${origin}/1/events`) {
      console.warn(`sift-instantsearch: insights event for ${target} dropped (not this Sift API)`);
      return Promise.resolve(false);
    }
    const events = toSiftEvents(data?.events, { sessionId });
    if (!events.length) return Promise.resolve(true);
    const dest = `${origin}/v1/events`;
    const body = JSON.stringify({ events });
    try {
      if (!apiKey && typeof navigator !== "undefined" && navigator.sendBeacon && navigator.sendBeacon(dest, body)) {
        return Promise.resolve(true);
      }
    } catch {
      // fall through to fetch
    }
    const headers = { "Content-Type": "text/plain", ...(apiKey ? { "X-API-Key": String(apiKey) } : {}) };
    const f = fetchFn || globalThis.fetch;
    return f(dest, { method: "POST", body, keepalive: true, headers }).then(
      (r) => r.ok,
      () => false,
    );
  };
}

function absoluteBase(endpoint) {
  const raw = String(endpoint || "");
  const loc = typeof location !== "undefined" ? location.href : undefined;
  if (!loc && !/^https?:/i.test(raw)) throw new SiftError("endpoint must be an absolute URL outside a browser");
  return baseUrl(new URL(raw || "/", loc).href);
}

/**
 * search-insights (its UMD bundle, `window.AlgoliaAnalytics`) with `host` set to this Sift API and Sift's
 * transport: pass the result as `insightsClient` to InstantSearch's insights middleware. Returns the function
 * interface the middleware calls (`aa("init", ...)`, `aa("clickedObjectIDsAfterSearch", ...)`).
 */
export function createSiftInsightsClient(options = {}) {
  const { endpoint, apiKey, sessionId, userToken, useCookie = false, fetch: fetchFn } = options;
  const AA = options.AlgoliaAnalytics || globalThis.AlgoliaAnalytics;
  if (!AA || typeof AA.createInsightsClient !== "function") {
    throw new SiftError("search-insights is not loaded: add vendor/search-insights.min.js before this module runs");
  }
  const host = absoluteBase(endpoint);
  const client = AA.createInsightsClient(siftInsightsRequest({ endpoint: host, apiKey, sessionId, fetch: fetchFn }));
  const aa = (method, ...args) => {
    if (typeof client[method] !== "function") {
      console.warn(`search-insights has no method ${method}`);
      return undefined;
    }
    return client[method](...args);
  };
  aa.version = client.version;
  const init = { appId: "sift", apiKey: apiKey ? String(apiKey) : "public", host, useCookie, partial: true };
  if (userToken) init.userToken = String(userToken);
  aa("init", init);
  return aa;
}

/**
 * Read a `summary_url` stream (Server-Sent Events): `onToken(text)` as the LM writes, then `onSummary(summary)`
 * with the checked sentences and their sources. fetch, not EventSource, so an API key can go in a header and an
 * AbortSignal can stop it. Resolves when the stream ends; an `error` event or a failed request rejects.
 */
export async function streamSummary(url, { apiKey, signal, onToken, onSummary, fetch: fetchFn } = {}) {
  const f = fetchFn || globalThis.fetch;
  const headers = { Accept: "text/event-stream", ...(apiKey ? { "X-API-Key": String(apiKey) } : {}) };
  const resp = await f(url, { headers, signal });
  if (!resp.ok) {
    const detail = await errorDetail(resp);
    throw new SiftError(`summary failed: HTTP ${resp.status}${detail ? `: ${detail}` : ""}`, resp.status);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let summary = null;
  const dispatch = (frame) => {
    let event = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (event === "token" && onToken) onToken(payload.text ?? "");
    else if (event === "summary") {
      summary = payload;
      if (onSummary) onSummary(payload);
    } else if (event === "error") {
      throw new SiftError(`summary failed: ${payload.detail || "error"}`, 500);
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    buf += decoder.decode(value || new Uint8Array(), { stream: !done });
    buf = buf.replace(/\r\n?/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      dispatch(frame);
    }
    if (done) break;
  }
  if (buf.trim()) dispatch(buf);
  return summary;
}
