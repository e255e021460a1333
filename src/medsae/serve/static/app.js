// medsae feature browser: a single page over the JSON API under /api (no external code).
"use strict";

const app = document.getElementById("app");
let INFO = null;

function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}
function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return typeof x === "number" ? Number(x).toFixed(digits) : esc(x);
}
async function api(path, options) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : res.statusText);
  return body;
}
function tile(s) {
  const extra = s.activation !== null && s.activation !== undefined ? `act ${fmt(s.activation, 2)}`
    : s.score !== null && s.score !== undefined ? `score ${fmt(s.score, 2)}` : "";
  return `<a class="tile" href="#/slice/${encodeURIComponent(s.slice_id)}" data-slice="${esc(s.slice_id)}">
    ${s.image_url ? `<img loading="lazy" src="${esc(s.image_url)}" alt="${esc(s.slice_id)}">` : `<div class="noimg">${esc(s.slice_id)}</div>`}
    <div class="cap">${esc(s.modality || "")} ${esc(s.plane || "")} · ${esc(extra)}<br><span class="muted">${esc(s.slice_id)}</span></div></a>`;
}
function grid(items) {
  return items.length ? `<div class="grid">${items.map(tile).join("")}</div>` : `<p class="muted">No slices.</p>`;
}
function showError(e) { app.innerHTML = `<div class="card error">${esc(e.message || e)}</div>`; }

// ---------------------------------------------------------------- feature-map overlays
// Colour stops of medsae.maps.render.COLOUR_STOPS: blue negative, white 0, red to yellow positive.
const MAP = { on: false, opacity: 0.7 };
const COLOUR_BAR = "linear-gradient(to right, rgb(49,54,149) 0%, rgb(116,173,209) 25%, rgb(255,255,255) 50%, rgb(244,109,67) 68%, rgb(215,48,39) 85%, rgb(255,230,60) 100%)";
function mapControls() {
  return `<div class="map-controls" id="map-controls">
    <label><input type="checkbox" id="map-toggle" ${MAP.on ? "checked" : ""}> Feature map overlay</label>
    <label>Opacity <input type="range" id="map-opacity" min="0" max="1" step="0.05" value="${MAP.opacity}"></label>
    <span class="colour-bar" title="contribution to the feature's pre-activation per pixel"><span>−</span><span class="cbar" style="background:${COLOUR_BAR}"></span><span id="map-vmax">+</span></span>
    <span class="muted" id="map-label"></span></div>`;
}
function overlayImg(sliceId, latent) {
  return `<img class="map-overlay" data-map-src="/api/slices/${encodeURIComponent(sliceId)}/map?latent=${encodeURIComponent(latent)}" alt="map of feature #${esc(latent)}" style="display:none">`;
}
async function describeMap(url) {
  const label = document.getElementById("map-label");
  if (!label || label.dataset.url === url) return;
  label.dataset.url = url;
  try {
    const res = await fetch(url);
    if (!res.ok) { const b = await res.json().catch(() => ({})); label.innerHTML = `<span class="error">${esc(b.detail || res.statusText)}</span>`; return; }
    const kind = res.headers.get("X-Map-Label") || "";
    const silent = res.headers.get("X-Map-Fires") === "false" ? " · does not fire on this slice" : "";
    label.textContent = `${kind === "approximate" ? "APPROXIMATE map" : "exact map"} · ${res.headers.get("X-Map-Method") || ""}${silent}`;
    const vmax = Number(res.headers.get("X-Map-Vmax"));
    document.getElementById("map-vmax").textContent = Number.isFinite(vmax) ? `+${vmax.toPrecision(3)}` : "+";
  } catch (e) { label.innerHTML = `<span class="error">${esc(e.message)}</span>`; }
}
function applyMaps() {
  const imgs = document.querySelectorAll("img.map-overlay");
  imgs.forEach(img => {
    if (MAP.on && img.getAttribute("src") !== img.dataset.mapSrc) img.src = img.dataset.mapSrc;
    img.style.display = MAP.on ? "block" : "none";
    img.style.opacity = String(MAP.opacity);
  });
  if (MAP.on && imgs.length) describeMap(imgs[0].dataset.mapSrc);
}
function bindMapControls() {
  const toggle = document.getElementById("map-toggle");
  const slider = document.getElementById("map-opacity");
  if (!toggle || !slider) return;
  toggle.addEventListener("change", () => { MAP.on = toggle.checked; applyMaps(); });
  slider.addEventListener("input", () => { MAP.opacity = Number(slider.value); applyMaps(); });
  applyMaps();
}

// ---------------------------------------------------------------- features page
const state = { sort: "frequency", order: "desc", q: "", concept: "", level: "", min_score: "", min_seed_cosine: "", offset: 0, limit: 50 };
const FILTERS = ["q", "concept", "level", "min_score", "min_seed_cosine"];

// "found again in 2 of 2 other seeds, cosine 0.97" (stability across seeds), or "" when trained once
function seedText(f) {
  if (!f.seed_others) return "";
  return `found again in ${f.seed_found} of ${f.seed_others} other seed${f.seed_others === 1 ? "" : "s"}, cosine ${fmt(f.seed_cosine, 2)}`;
}

async function featuresPage() {
  const levels = (INFO.levels || []).map(l => `<option value="${l}" ${String(l) === state.level ? "selected" : ""}>${l}</option>`).join("");
  const concepts = (INFO.concepts || []).map(c => `<option ${c === state.concept ? "selected" : ""}>${esc(c)}</option>`).join("");
  app.innerHTML = `<h1>Features</h1>
  <form class="filters" id="filters">
    <label>Text<input name="q" value="${esc(state.q)}" placeholder="description or concept"></label>
    <label>Concept<select name="concept"><option value="">any</option>${concepts}</select></label>
    <label>Matryoshka level<select name="level"><option value="">any</option>${levels}</select></label>
    <label>Min. detection score<input name="min_score" type="number" step="0.05" min="0" max="1" value="${esc(state.min_score)}"></label>
    <label>Min. seed cosine<input name="min_seed_cosine" type="number" step="0.05" min="0" max="1" value="${esc(state.min_seed_cosine)}"></label>
    <button type="submit">Filter</button>
  </form>
  <div id="feature-table" class="card"><p class="muted">Loading…</p></div>`;
  document.getElementById("filters").addEventListener("submit", ev => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    for (const k of FILTERS) state[k] = String(f.get(k) || "");
    state.offset = 0;
    loadFeatures();
  });
  await loadFeatures();
}

async function loadFeatures() {
  const box = document.getElementById("feature-table");
  const p = new URLSearchParams({ sort: state.sort, order: state.order, offset: state.offset, limit: state.limit });
  for (const k of FILTERS) if (state[k]) p.set(k, state[k]);
  try {
    const data = await api(`/api/features?${p}`);
    const organ = INFO.organ_map || data.items.some(f => f.organ_ap != null);
    const cols = [["latent", "Feature"], ["level", "Level"], ["frequency", "Frequency"], ["max_activation", "Max act."],
      ["detection_balanced_accuracy", "Detection score"], ["concept_auroc", "Concept AUROC"], ["seed_cosine", "Seed stability"],
      ...(organ ? [["organ_ap", "Organ AP"]] : [])];
    const head = cols.map(([k, label]) => `<th data-sort="${k}" class="${state.sort === k ? "sorted " + state.order : ""}">${label}</th>`).join("");
    const rows = data.items.map(f => `<tr>
      <td><a href="#/feature/${f.latent}">#${f.latent}</a></td><td class="num">${f.level ?? "–"}</td>
      <td class="num">${fmt(f.frequency * 100, 2)}%</td><td class="num">${fmt(f.max_activation, 2)}</td>
      <td class="num">${fmt(f.detection_balanced_accuracy, 2)}</td><td class="num">${fmt(f.concept_auroc, 2)}</td>
      <td class="num seed" title="${esc(seedText(f))}">${f.seed_others ? `${f.seed_found}/${f.seed_others} · ${fmt(f.seed_cosine, 2)}` : "–"}</td>
      ${organ ? `<td class="num organ-ap" title="${esc(f.organ_structure || "")}">${fmt(f.organ_ap, 2)}${f.organ_structure ? ` <span class="muted">${esc(f.organ_structure)}</span>` : ""}</td>` : ""}
      <td>${esc(f.description || "")} ${f.concept ? `<span class="pill">${esc(f.concept)}</span>` : ""}</td></tr>`).join("");
    const end = Math.min(state.offset + state.limit, data.total);
    box.innerHTML = `<table id="features"><thead><tr>${head}<th>Description</th></tr></thead><tbody>${rows}</tbody></table>
      <div class="pager"><button id="prev" ${state.offset ? "" : "disabled"}>Previous</button>
      <span class="muted">${data.total ? state.offset + 1 : 0}–${end} of ${data.total}</span>
      <button id="next" ${end < data.total ? "" : "disabled"}>Next</button></div>`;
    box.querySelectorAll("th[data-sort]").forEach(th => th.addEventListener("click", () => {
      const k = th.dataset.sort;
      state.order = state.sort === k && state.order === "desc" ? "asc" : "desc";
      state.sort = k; state.offset = 0; loadFeatures();
    }));
    document.getElementById("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); loadFeatures(); };
    document.getElementById("next").onclick = () => { state.offset += state.limit; loadFeatures(); };
  } catch (e) { box.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---------------------------------------------------------------- one feature
async function featurePage(latent) {
  const d = await api(`/api/features/${encodeURIComponent(latent)}`);
  const f = d.feature;
  const h = d.histogram;
  const peak = Math.max(1, ...h.counts);
  const hist = h.counts.length ? `<div class="hist" title="non-zero activations">${h.counts.map((c, i) =>
    `<div style="height:${(100 * c / peak).toFixed(1)}%" title="${fmt(h.edges[i], 2)}–${fmt(h.edges[i + 1], 2)}: ${c}"></div>`).join("")}</div>
    <p class="muted">${fmt(h.edges[0], 2)} … ${fmt(h.edges[h.edges.length - 1], 2)}; zero on ${h.zeros} slices</p>` : `<p class="muted">Never active.</p>`;
  const enr = d.enrichment.length ? `<table><thead><tr><th>Label</th><th>Active slices</th><th>Base rate</th><th>Lift</th></tr></thead><tbody>${
    d.enrichment.map(e => `<tr><td>${esc(e.label)}</td><td class="num">${fmt(e.rate_active * 100, 1)}% (${e.count_active})</td>
      <td class="num">${fmt(e.rate_all * 100, 1)}%</td><td class="num">${fmt(e.lift, 2)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">Not computed (no labels or never active).</p>`;
  app.innerHTML = `<h1>Feature #${f.latent} <span class="muted">level ${f.level ?? "–"}</span></h1>
  <div class="card"><p><b>${esc(f.description || "No description computed.")}</b>
    ${f.describer ? `<span class="muted">(${esc(f.describer)})</span>` : ""}</p>
    ${(f.rule || []).length ? `<p class="muted">Rule${f.rule_min && f.rule_min < f.rule.length ? ` (any ${f.rule_min} of ${f.rule.length})` : ""}: ${f.rule.map(r => `<span class="pill">${esc(r)}</span>`).join(" ")}</p>` : ""}
    <p>Detection score (balanced accuracy): <span class="score">${fmt(f.detection_balanced_accuracy, 3)}</span> ·
    AUROC ${fmt(f.detection_auroc, 3)} · concept ${f.concept ? `<span class="pill">${esc(f.concept)}</span> (AUROC ${fmt(f.concept_auroc, 3)})` : "–"} ·
    frequency ${fmt(f.frequency * 100, 2)}% · mean ${fmt(f.mean_activation, 3)} · max ${fmt(f.max_activation, 3)}</p>
    ${f.seed_others ? `<p class="seed-stability">Stability: ${esc(seedText(f))}.</p>` : ""}
    ${f.organ_structure ? `<p id="organ-line">Best structure: <span class="pill">${esc(f.organ_structure)}</span> · token AP <span class="score">${fmt(f.organ_ap, 3)}</span> ·
    pointing game ${fmt(f.organ_pointing, 2)} <span class="muted">(native token map, held-out test slices)</span></p>` : ""}</div>
  <h2>Top-activating slices</h2>${mapControls()}<div id="top-slices">${grid(d.top)}</div>
  <div class="cols" style="margin-top:16px"><div class="card"><h2>Activation histogram</h2>${hist}</div>
  <div class="card"><h2>Label enrichment</h2>${enr}</div></div>
  <div class="card" style="margin-top:16px"><h2>Concept profile (training slices)</h2><div id="profile"></div></div>
  <h2>Slices at activation quantiles</h2>${grid(d.quantiles.map(q => ({ ...q.slice, activation: q.activation, plane: `${q.slice.plane || ""} q${Math.round(q.quantile * 100)}` })))}`;
  document.querySelectorAll("#top-slices a.tile").forEach(a => a.insertAdjacentHTML("beforeend", overlayImg(a.dataset.slice, f.latent)));
  bindMapControls();
  profileTable(d.profile || [], "auroc", true);
}

// The concept profile: every label with its AUROC and lift; a header click sorts by it.
const PROFILE_COLUMNS = [["label", "Label"], ["auroc", "AUROC"], ["lift", "Lift"], ["p_active", "P(label | active)"],
  ["p_base", "Base rate"], ["n_active_with_label", "Active with label"], ["concept_map", "Concept map"]];
function profileTable(rows, key, descending) {
  const box = document.getElementById("profile");
  if (!box) return;
  if (!rows.length) { box.innerHTML = `<p class="muted">No concept profile (run \`medsae interpret\` again).</p>`; return; }
  const sorted = [...rows].sort((a, b) => {
    const x = a[key] ?? -Infinity, y = b[key] ?? -Infinity;
    return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
  });
  const cell = (r, k) => k === "label" ? `<td>${esc(r.label)}</td>` : k === "concept_map" ? `<td>${r.concept_map ? "✓" : ""}</td>`
    : `<td class="num">${fmt(r[k], k.startsWith("n_") ? 0 : 3)}</td>`;
  box.innerHTML = `<table id="profile-table"><thead><tr>${PROFILE_COLUMNS.map(([k, t]) =>
    `<th data-key="${k}" class="sortable">${t}${k === key ? (descending ? " ▼" : " ▲") : ""}</th>`).join("")}</tr></thead><tbody>${
    sorted.map(r => `<tr>${PROFILE_COLUMNS.map(([k]) => cell(r, k)).join("")}</tr>`).join("")}</tbody></table>`;
  box.querySelectorAll("th[data-key]").forEach(th => th.addEventListener("click", () =>
    profileTable(rows, th.dataset.key, th.dataset.key === key ? !descending : th.dataset.key !== "label")));
}

// ---------------------------------------------------------------- one slice
async function slicePage(sliceId) {
  const d = await api(`/api/slices/${encodeURIComponent(sliceId)}`);
  const meta = Object.entries(d.metadata).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  const fp = d.fingerprint.length ? `<table><thead><tr><th>Feature</th><th>Activation</th><th>Description</th></tr></thead><tbody>${
    d.fingerprint.map(x => `<tr><td><a href="#/feature/${x.latent}">#${x.latent}</a></td><td class="num">${fmt(x.activation, 3)}</td><td>${esc(x.description || "")}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No active features.</p>`;
  const mapLatent = d.fingerprint.length && d.slice.image_url ? d.fingerprint[0].latent : null;
  const mapPick = mapLatent === null ? "" : `<label>Feature <select id="map-latent">${d.fingerprint.map(x =>
    `<option value="${x.latent}">#${x.latent} ${esc((x.description || "").slice(0, 40))}</option>`).join("")}</select></label>`;
  app.innerHTML = `<h1>${esc(d.slice.slice_id)}</h1>
  ${mapLatent === null ? "" : mapControls().replace('<span class="muted" id="map-label">', mapPick + '<span class="muted" id="map-label">')}
  <div class="cols"><div class="big">${d.slice.image_url ? `<img src="${esc(d.slice.image_url)}?size=384" alt="${esc(d.slice.slice_id)}">` : `<div class="noimg">no image in this workspace</div>`}${mapLatent === null ? "" : overlayImg(d.slice.slice_id, mapLatent)}</div>
  <div class="card"><dl class="meta">${meta}</dl></div></div>
  <div class="card"><h2>Fingerprint (strongest features)</h2>${fp}</div>
  <h2>Similar slices</h2><div id="similar"><p class="muted">Searching…</p></div>`;
  const pick = document.getElementById("map-latent");
  if (pick) pick.addEventListener("change", () => {
    const img = document.querySelector(".big img.map-overlay");
    img.dataset.mapSrc = `/api/slices/${encodeURIComponent(d.slice.slice_id)}/map?latent=${encodeURIComponent(pick.value)}`;
    applyMaps();
  });
  bindMapControls();
  try {
    const s = await api(`/api/slices/${encodeURIComponent(sliceId)}/similar?k=12`);
    document.getElementById("similar").innerHTML = grid(s.items) + `<p class="muted">method: ${esc(s.method)}</p>`;
  } catch (e) { document.getElementById("similar").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---------------------------------------------------------------- search
async function searchPage(query) {
  app.innerHTML = `<h1>Search</h1>
  <div class="cols"><form class="card" id="text-form"><h2>By text</h2>
    <div class="filters"><input id="q" name="q" size="34" value="${esc(query || "")}" placeholder="e.g. axial CT slice through the liver">
    <button type="submit">Search</button></div></form>
  <form class="card" id="image-form"><h2>By image</h2><div class="filters">
    <input id="file" type="file" name="file" accept=".png,.jpg,.jpeg,.dcm,.nii,.nii.gz,image/png,image/jpeg,application/dicom">
    <button type="submit">Upload</button></div>
    <p class="muted">PNG, JPEG, DICOM or NIfTI (middle axial slice), up to ${Math.round((INFO.upload_limit_bytes || 0) / 1048576)} MB.</p></form></div>
  <div id="results"></div>`;
  document.getElementById("text-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const q = document.getElementById("q").value.trim();
    if (q) location.hash = `#/search?q=${encodeURIComponent(q)}`;
  });
  document.getElementById("image-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const file = document.getElementById("file").files[0];
    if (!file) return;
    const body = new FormData(); body.append("file", file);
    await showResults(api("/api/search/image?k=24", { method: "POST", body }));
  });
  if (query) await showResults(api(`/api/search?q=${encodeURIComponent(query)}&k=24`));
}

async function showResults(promise) {
  const box = document.getElementById("results");
  box.innerHTML = `<p class="muted">Searching…</p>`;
  try {
    const r = await promise;
    const feats = r.features.length ? `<p>Through features: ${r.features.map(f =>
      `<a class="pill" href="#/feature/${f.latent}">#${f.latent}${f.description ? " " + esc(f.description) : ""}</a>`).join(" ")}</p>` : "";
    const reading = r.reading ? `<p id="reading">Read as: <b>${esc(r.reading.summary)}</b></p>` : "";
    box.innerHTML = `<div class="card">${reading}<p class="muted">${r.items.length} result(s) · method: ${esc(r.method)}${r.upload_kind ? " · file: " + esc(r.upload_kind) : ""}</p>${feats}</div>
      <div id="search-results">${grid(r.items)}</div>`;
  } catch (e) { box.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---------------------------------------------------------------- baselines and seeds
async function summaryPage() {
  const d = await api("/api/summary");
  if (!d.available) {
    app.innerHTML = `<h1>Baselines and seeds</h1><p class="muted">No summary.json in this workspace: the pipeline (medsae run, medsae demo) writes it.</p>`;
    return;
  }
  const st = d.seed_stability;
  const head = ["figure", `SAE ${d.run} (mean ± sd, ${d.n_seeds} seed${d.n_seeds === 1 ? "" : "s"})`, ...d.baselines]
    .map(h => `<th>${esc(h)}</th>`).join("");
  const rows = d.rows.map(r => `<tr><td>${esc(r.label)}</td><td class="num sae">${esc(r.sae_text)}</td>${
    d.baselines.map(b => `<td class="num">${fmt(r.baselines[b], 3)}</td>`).join("")}</tr>`).join("");
  app.innerHTML = `<h1>Baselines and seeds</h1>
  ${st ? `<p id="seed-stability">Stability across seeds: MCC ${fmt(st.mcc, 3)} · alive latents matched ≥ 0.9: ${fmt(st.frac_match_0_9, 3)} · ≥ 0.7: ${fmt(st.frac_match_0_7, 3)} · by activations: MCC ${fmt(st.act_mcc, 3)}, matched ≥ 0.7: ${fmt(st.act_frac_0_7, 3)}</p>` : ""}
  <div class="card"><table id="side-by-side"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table></div>
  <h2>Where a baseline matches or beats the SAE</h2>
  ${d.findings.length ? `<ul id="findings">${d.findings.map(f => `<li>${esc(f)}</li>`).join("")}</ul>` : `<p id="findings">On no figure${d.baselines.length ? "" : " (no baseline in this workspace)"}.</p>`}`;
}

// ---------------------------------------------------------------- router
async function route() {
  const hash = location.hash || "#/features";
  const [path, qs] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === parts[0]));
  try {
    if (!INFO) {
      INFO = await api("/api/info");
      document.getElementById("run-info").textContent =
        `${INFO.encoder || "no encoder"} / ${INFO.run || "no SAE"} · ${INFO.n_slices} slices · ${INFO.n_latents} features`;
    }
    if (parts[0] === "feature" && parts[1] !== undefined) await featurePage(decodeURIComponent(parts[1]));
    else if (parts[0] === "slice" && parts[1] !== undefined) await slicePage(decodeURIComponent(parts.slice(1).join("/")));
    else if (parts[0] === "search") await searchPage(new URLSearchParams(qs || "").get("q"));
    else if (parts[0] === "summary") await summaryPage();
    else await featuresPage();
    app.dataset.page = parts[0] || "features";
  } catch (e) { showError(e); }
}
window.addEventListener("hashchange", route);
route();
