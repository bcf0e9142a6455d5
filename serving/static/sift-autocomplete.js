/**
 * sift-autocomplete.js — search-as-you-type for a Sift API, as a dependency-free ES module.
 *
 *   import { attachAutocomplete } from "https://search.example.org/widget/sift-autocomplete.js";
 *
 *   const ac = attachAutocomplete(document.querySelector("#q"), {
 *     endpoint: "https://search.example.org", // API base URL; "" = same origin. Other origins need the
 *                                             // API's `cors_origins` to list this page's origin.
 *     k: 8,                // suggestions requested from GET /v1/suggest
 *     debounceMs: 120,     // quiet time after the last keystroke before asking for suggestions
 *     suggestEndpoint: undefined, // base URL for GET /v1/suggest alone (the keystroke server beside the API,
 *                          // serving/keystroke.py); `endpoint` when omitted
 *     suggestCache: 200,   // answers kept per page (a backspace or a retyped prefix asks nothing); 0: none
 *     minChars: 1,         // shorter input closes the list instead of asking
 *     limit: 10,           // results requested from POST /v1/search
 *     index: undefined,    // index to search; the server's default when omitted
 *     searchParams: {},    // extra /v1/search body fields (filters, mode, rerank, session_id, ...)
 *     resultsEl: el,       // where results are rendered; omit it to render them yourself in onSearch
 *     onSearch: (query, response) => {}, // after each search: the parsed /v1/search body
 *     onSubmit: null,      // (query) => {}: called instead of the built-in search on Enter / a pick, for a
 *                          // page that runs its own (sift-instantsearch.js's refine); suggestions stay
 *     onError: (error, phase) => {},     // phase is "suggest" or "search"; aborted requests never count
 *     styles: true,        // link sift-autocomplete.css (next to this file) once per page
 *     events: true,        // send click events (POST /v1/events via navigator.sendBeacon) for picked
 *                          // suggestions and clicked results, with their query_id and 1-based position
 *     sessionId: undefined, userToken: undefined, // sent with suggest/search requests and events
 *     apiKey: undefined,   // a public API key (scopes search, suggest, events only: it is visible in the
 *                          // page), sent as X-API-Key; servers without keys need none
 *   });
 *   await ac.search("text");  // runs a search as Enter would; resolves to the response (null if failed/superseded)
 *   ac.close();               // closes the suggestion list
 *   ac.destroy();             // removes the listbox, listeners and ARIA attributes
 *
 * Also exported: renderResults(container, response), safeHighlight(html), matchSpan(text, typed),
 * explanationText(explanation), sendEvent(endpoint, event, apiKey), for pages that render results themselves
 * (rendered results carry data-position and their list data-query-id, what a click event needs).
 *
 * Click events never block the page: sendBeacon queues them (it survives a click that navigates away) and
 * sends a text/plain body, which needs no CORS preflight; fetch with keepalive is the fallback, and the only way
 * with an API key (a beacon cannot carry headers).
 *
 * Behaviour: suggestions are fetched after `debounceMs` of quiet; a newer keystroke aborts the request
 * in flight (AbortController) and a response for anything but the current input is dropped, so the list
 * never shows stale suggestions. The input is an ARIA 1.2 combobox (aria-autocomplete="list", manual
 * selection): ArrowDown / ArrowUp move the active option (aria-activedescendant, aria-selected) without
 * changing the text, Enter searches for the active option (or the typed text), Escape closes the list,
 * a click picks an option. The typed prefix is wrapped in <mark> in each suggestion.
 *
 * Safety: suggestion text, titles and URLs are inserted as text nodes; highlight snippets (HTML-escaped
 * text with <em> tags, per the API) are parsed inertly and only their text and <em> elements are copied,
 * so nothing from the server can inject markup or script. Links are kept only for http(s) URLs.
 */

const DEFAULTS = {
  endpoint: "",
  k: 8,
  debounceMs: 120,
  suggestEndpoint: undefined,
  suggestCache: 200,
  minChars: 1,
  limit: 10,
  index: undefined,
  searchParams: {},
  resultsEl: null,
  onSearch: null,
  onSubmit: null,
  onError: null,
  styles: true,
  events: true,
  sessionId: undefined,
  userToken: undefined,
  apiKey: undefined,
};

let instances = 0;
let stylesLinked = false;

function linkStyles() {
  if (stylesLinked || typeof document === "undefined") return;
  stylesLinked = true;
  const href = new URL("./sift-autocomplete.css", import.meta.url).href;
  if ([...document.querySelectorAll('link[rel="stylesheet"]')].some((l) => l.href === href)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.appendChild(link);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Where `typed` matches `text` (prefix first, else anywhere), case-insensitively: [start, end] or null. */
export function matchSpan(text, typed) {
  const q = typed.trimStart();
  if (!q) return null;
  const lt = text.toLowerCase();
  const lq = q.toLowerCase();
  if (lt.length !== text.length || lq.length !== q.length) {
    // Case folding changed lengths (rare scripts): only an exact-case match is safe to slice.
    const i = text.indexOf(q);
    return i < 0 ? null : [i, i + q.length];
  }
  if (lt.startsWith(lq)) return [0, q.length];
  const i = lt.indexOf(lq);
  return i < 0 ? null : [i, i + q.length];
}

/** Text plus <em> only, copied out of an inertly parsed snippet: safe even if the server misbehaves. */
export function safeHighlight(html) {
  const frag = document.createDocumentFragment();
  const doc = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
  const copy = (from, to) => {
    for (const node of from.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        to.appendChild(document.createTextNode(node.nodeValue));
      } else if (node.nodeType === Node.ELEMENT_NODE) {
        if (node.tagName === "EM") {
          const em = document.createElement("em");
          copy(node, em);
          to.appendChild(em);
        } else if (!["SCRIPT", "STYLE", "TEMPLATE"].includes(node.tagName)) {
          copy(node, to);
        }
      }
    }
  };
  copy(doc.body, frag);
  return frag;
}

function safeHref(url) {
  if (!url) return null;
  try {
    const u = new URL(url, document.baseURI);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

function fmt(x, digits = 3) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

/** One line on why a result is where it is: each stage's rank or score. */
export function explanationText(ex) {
  if (!ex) return "";
  const parts = [];
  parts.push(ex.bm25_rank != null ? `bm25 #${ex.bm25_rank}` : "bm25 –");
  parts.push(ex.dense_rank != null ? `dense #${ex.dense_rank}` : "dense –");
  if (ex.fused_score != null) parts.push(`fused ${fmt(ex.fused_score)}`);
  if (ex.rerank_score != null) parts.push(`rerank ${fmt(ex.rerank_score)}`);
  return parts.join(" · ");
}

/** Send one click / conversion / view event to `${endpoint}/v1/events` without blocking; true if queued. */
export function sendEvent(endpoint, event, apiKey) {
  const url = `${String(endpoint || "").replace(/\/+$/, "")}/v1/events`;
  const body = JSON.stringify({ events: [{ timestamp: Date.now(), ...event }] });
  try {
    if (!apiKey && navigator.sendBeacon && navigator.sendBeacon(url, body)) return true;
  } catch (_) {
    // fall through to fetch
  }
  const headers = { "Content-Type": "text/plain", ...(apiKey ? { "X-API-Key": apiKey } : {}) };
  fetch(url, { method: "POST", body, keepalive: true, headers }).catch(() => {});
  return true;
}

/** Render a /v1/search response into `container` (replacing its content). */
export function renderResults(container, response) {
  container.replaceChildren();
  const results = Array.isArray(response?.results) ? response.results : [];
  const meta = [`${results.length} result${results.length === 1 ? "" : "s"}`];
  if (typeof response?.took_ms === "number") meta.push(`${Math.round(response.took_ms)} ms`);
  meta.push(response?.reranked ? "reranked" : response?.rerank_note || "not reranked");
  const status = el("p", "sift-results-meta", meta.join(" · "));
  status.setAttribute("role", "status");
  container.appendChild(status);
  if (!results.length) {
    container.appendChild(el("p", "sift-results-empty", `No results for “${response?.query ?? ""}”.`));
    return;
  }
  const list = el("ol", "sift-results");
  if (response?.query_id) list.dataset.queryId = String(response.query_id);
  const offset = Number.isInteger(response?.offset) ? response.offset : 0;
  for (const [i, r] of results.entries()) {
    const item = el("li", "sift-result");
    item.dataset.id = String(r.id ?? "");
    item.dataset.position = String(offset + i + 1);
    const href = safeHref(r.url);
    const title = el(href ? "a" : "span", "sift-result-title");
    if (href) title.href = href;
    const hlTitle = r.highlights?.title?.[0];
    if (hlTitle) title.appendChild(safeHighlight(hlTitle));
    else title.textContent = r.title || String(r.id ?? "");
    item.appendChild(title);
    if (href) item.appendChild(el("div", "sift-result-url", href));
    const body = r.highlights?.body?.[0];
    if (body) {
      const snippet = el("p", "sift-result-snippet");
      snippet.appendChild(safeHighlight(body));
      item.appendChild(snippet);
    }
    const why = el("div", "sift-result-explain", explanationText(r.explanation));
    why.title = `score ${fmt(r.score, 4)}`;
    item.appendChild(why);
    list.appendChild(item);
  }
  container.appendChild(list);
}

function renderError(container, message) {
  container.replaceChildren();
  const p = el("p", "sift-results-error", message);
  p.setAttribute("role", "alert");
  container.appendChild(p);
}

async function errorMessage(resp) {
  let detail = "";
  try {
    const body = await resp.json();
    detail = typeof body?.detail === "string" ? body.detail : JSON.stringify(body?.detail ?? body);
  } catch {
    /* not JSON */
  }
  return `HTTP ${resp.status}${detail ? `: ${detail}` : ""}`;
}

/**
 * Make `input` a combobox backed by the Sift API. Returns a controller:
 * `{ search(query), close(), destroy(), listbox }`.
 */
export function attachAutocomplete(input, options = {}) {
  if (!(input instanceof HTMLInputElement)) throw new TypeError("attachAutocomplete needs an <input> element");
  const opts = { ...DEFAULTS, ...options };
  const base = String(opts.endpoint || "").replace(/\/+$/, "");
  const suggestBase = opts.suggestEndpoint == null ? base : String(opts.suggestEndpoint).replace(/\/+$/, "");
  const answers = new Map(); // url → parsed body, oldest first (an LRU of at most opts.suggestCache)
  const auth = opts.apiKey ? { "X-API-Key": String(opts.apiKey) } : {};
  if (opts.styles) linkStyles();

  const uid = `sift-ac-${++instances}`;
  const listbox = el("ul", "sift-ac-list");
  listbox.id = `${uid}-listbox`;
  listbox.setAttribute("role", "listbox");
  listbox.hidden = true;
  if (input.labels?.length) {
    const label = input.labels[0];
    if (!label.id) label.id = `${uid}-label`;
    listbox.setAttribute("aria-labelledby", label.id);
  } else {
    listbox.setAttribute("aria-label", "Suggestions");
  }
  const live = el("div", "sift-ac-live");
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");

  const parent = input.parentElement;
  if (parent && getComputedStyle(parent).position === "static") parent.style.position = "relative";
  input.after(listbox, live);

  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-expanded", "false");
  input.setAttribute("aria-controls", listbox.id);
  input.setAttribute("autocomplete", "off");
  input.setAttribute("autocapitalize", "off");
  input.setAttribute("spellcheck", "false");

  let suggestions = [];
  let active = -1;
  let timer = null;
  let suggestSeq = 0;
  let suggestCtl = null;
  let searchSeq = 0;
  let searchCtl = null;
  let suggestQueryId = null;

  const report = (error, phase) => {
    if (typeof opts.onError === "function") opts.onError(error, phase);
  };

  function setActive(i) {
    const options = listbox.children;
    if (active >= 0 && options[active]) options[active].setAttribute("aria-selected", "false");
    active = i;
    if (active >= 0 && options[active]) {
      const opt = options[active];
      opt.setAttribute("aria-selected", "true");
      input.setAttribute("aria-activedescendant", opt.id);
      opt.scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function open() {
    if (!suggestions.length) return;
    listbox.style.left = `${input.offsetLeft}px`;
    listbox.style.top = `${input.offsetTop + input.offsetHeight}px`;
    listbox.style.minWidth = `${input.offsetWidth}px`;
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function close() {
    setActive(-1);
    listbox.hidden = true;
    input.setAttribute("aria-expanded", "false");
  }

  function cancelSuggest() {
    clearTimeout(timer);
    timer = null;
    suggestSeq++;
    if (suggestCtl) suggestCtl.abort();
    suggestCtl = null;
  }

  function render(typed) {
    listbox.replaceChildren();
    active = -1;
    input.removeAttribute("aria-activedescendant");
    suggestions.forEach((s, i) => {
      const text = String(s.text ?? "");
      const opt = el("li", "sift-ac-option");
      opt.id = `${uid}-opt-${i}`;
      opt.setAttribute("role", "option");
      opt.setAttribute("aria-selected", "false");
      opt.dataset.value = text;
      const label = el("span", "sift-ac-text");
      const span = matchSpan(text, typed);
      if (span) {
        const [a, b] = span;
        if (a > 0) label.appendChild(document.createTextNode(text.slice(0, a)));
        label.appendChild(el("mark", "sift-ac-match", text.slice(a, b)));
        if (b < text.length) label.appendChild(document.createTextNode(text.slice(b)));
      } else {
        label.textContent = text;
      }
      opt.appendChild(label);
      if (s.source) {
        const src = el("span", `sift-ac-source sift-ac-source-${String(s.source).replace(/[^a-z]/g, "")}`, s.source);
        src.setAttribute("aria-hidden", "true");
        src.title = { log: "from past searches", lm: "from the language model", "log+lm": "past searches and the language model" }[s.source] || "";
        opt.appendChild(src);
      }
      opt.addEventListener("mousemove", () => {
        if (active !== i) setActive(i);
      });
      opt.addEventListener("click", () => choose(i));
      listbox.appendChild(opt);
    });
    live.textContent = suggestions.length ? `${suggestions.length} suggestions available.` : "";
    if (suggestions.length) open();
    else close();
  }

  async function fetchSuggestions(typed) {
    const seq = ++suggestSeq;
    if (suggestCtl) suggestCtl.abort();
    const ctl = new AbortController();
    suggestCtl = ctl;
    const url = suggestUrl(typed);
    try {
      let body = answers.get(url);
      if (body === undefined) {
        const resp = await fetch(url, { signal: ctl.signal, headers: { Accept: "application/json", ...auth } });
        if (!resp.ok) throw new Error(await errorMessage(resp));
        body = await resp.json();
        if (opts.suggestCache > 0 && !body?.partial) {
          answers.set(url, body);
          if (answers.size > opts.suggestCache) answers.delete(answers.keys().next().value);
        }
      } else {
        answers.delete(url); // most recently used last
        answers.set(url, body);
      }
      // A newer keystroke (or a search) superseded this request: drop it.
      if (seq !== suggestSeq || input.value !== typed) return;
      suggestions = Array.isArray(body?.suggestions) ? body.suggestions : [];
      suggestQueryId = body?.query_id || null;
      render(typed);
    } catch (err) {
      if (err?.name === "AbortError" || seq !== suggestSeq) return;
      suggestions = [];
      render(typed);
      report(err, "suggest");
    } finally {
      if (suggestCtl === ctl) suggestCtl = null;
    }
  }

  function onInput() {
    cancelSuggest();
    const typed = input.value;
    if (typed.trim().length < opts.minChars) {
      suggestions = [];
      listbox.replaceChildren();
      live.textContent = "";
      close();
      return;
    }
    // an answer already here needs no quiet time: show it at once
    timer = setTimeout(() => fetchSuggestions(typed), answers.has(suggestUrl(typed)) ? 0 : opts.debounceMs);
  }

  function suggestUrl(typed) {
    const params = new URLSearchParams({ q: typed, k: String(opts.k), ...identity() });
    return `${suggestBase}/v1/suggest?${params}`;
  }

  function identity() {
    const who = {};
    if (opts.sessionId) who.session_id = String(opts.sessionId);
    if (opts.userToken) who.user_token = String(opts.userToken);
    return who;
  }

  function choose(i) {
    const s = suggestions[i];
    if (!s) return;
    if (opts.events && suggestQueryId) {
      const text = String(s.text ?? "");
      sendEvent(base, {
        type: "click", event_name: "Suggestion clicked", query_id: suggestQueryId,
        object_ids: [text], positions: [i + 1], ...identity(),
      }, opts.apiKey);
    }
    input.value = String(s.text ?? "");
    search(input.value);
  }

  function onResultClick(ev) {
    const title = ev.target instanceof Element ? ev.target.closest(".sift-result-title") : null;
    const item = title?.closest(".sift-result");
    const list = item?.closest(".sift-results");
    if (!opts.events || !item || !list?.dataset.queryId) return;
    sendEvent(base, {
      type: "click", event_name: "Result clicked", query_id: list.dataset.queryId,
      object_ids: [item.dataset.id], positions: [Number(item.dataset.position)], ...identity(),
    }, opts.apiKey);
  }

  async function search(query) {
    const q = String(query ?? "").trim();
    cancelSuggest();
    close();
    // The list belonged to what was typed before; it comes back with the next keystroke.
    suggestions = [];
    listbox.replaceChildren();
    live.textContent = "";
    if (typeof opts.onSubmit === "function") {
      opts.onSubmit(q);
      return null;
    }
    if (!q) return null;
    const seq = ++searchSeq;
    if (searchCtl) searchCtl.abort();
    const ctl = new AbortController();
    searchCtl = ctl;
    const body = { ...identity(), ...opts.searchParams, query: q, limit: opts.limit };
    if (opts.index) body.index = opts.index;
    const target = opts.resultsEl;
    if (target) target.setAttribute("aria-busy", "true");
    try {
      const resp = await fetch(`${base}/v1/search`, {
        method: "POST",
        signal: ctl.signal,
        headers: { "Content-Type": "application/json", Accept: "application/json", ...auth },
        body: JSON.stringify(body),
      });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      const data = await resp.json();
      if (seq !== searchSeq) return null;
      if (target) renderResults(target, data);
      if (typeof opts.onSearch === "function") opts.onSearch(q, data);
      return data;
    } catch (err) {
      if (err?.name === "AbortError" || seq !== searchSeq) return null;
      if (target) renderError(target, `Search failed: ${err.message || err}`);
      report(err, "search");
      return null;
    } finally {
      if (searchCtl === ctl) searchCtl = null;
      if (target && seq === searchSeq) target.removeAttribute("aria-busy");
    }
  }

  function onKeydown(ev) {
    if (ev.isComposing) return;
    const n = suggestions.length;
    const expanded = !listbox.hidden;
    switch (ev.key) {
      case "ArrowDown":
        if (!n) return;
        ev.preventDefault();
        if (!expanded) {
          open();
          if (ev.altKey) return;
        }
        setActive(active + 1 >= n ? 0 : active + 1);
        break;
      case "ArrowUp":
        if (!n) return;
        ev.preventDefault();
        if (!expanded) open();
        setActive(active <= 0 ? n - 1 : active - 1);
        break;
      case "Enter":
        ev.preventDefault();
        if (expanded && active >= 0) choose(active);
        else search(input.value);
        break;
      case "Escape":
        if (expanded) {
          ev.preventDefault();
          close();
        }
        break;
      case "Tab":
        close();
        break;
      default:
    }
  }

  // Keep focus in the input when an option is pressed, so blur does not close the list under the click.
  const onPointerDown = (ev) => ev.preventDefault();
  const onBlur = () => close();

  if (opts.resultsEl) opts.resultsEl.addEventListener("click", onResultClick);
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", onKeydown);
  input.addEventListener("blur", onBlur);
  listbox.addEventListener("mousedown", onPointerDown);

  function destroy() {
    cancelSuggest();
    if (searchCtl) searchCtl.abort();
    input.removeEventListener("input", onInput);
    input.removeEventListener("keydown", onKeydown);
    input.removeEventListener("blur", onBlur);
    if (opts.resultsEl) opts.resultsEl.removeEventListener("click", onResultClick);
    for (const a of ["role", "aria-autocomplete", "aria-expanded", "aria-controls", "aria-activedescendant"]) {
      input.removeAttribute(a);
    }
    listbox.remove();
    live.remove();
  }

  return { search, close, destroy, listbox };
}
