// shallowcnn serve: the page's behaviour. Plain JavaScript, no libraries, nothing fetched
// from anywhere but this server.
//
// Coordinates: the API gives detections in ORIGINAL image pixels, pixel centres at whole
// numbers (boxes as their outer edges); the viewer works in SCANNED pixels (the image
// resampled to 0.07 mm), where scanned pixel k covers [k, k + 1) of the stage: an original
// coordinate v sits at (v + 0.5) / scale (toStage). The stage is scanned_width x
// scanned_height CSS pixels, and zoom/pan is one CSS transform on it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { result: null, file: null, zoom: 1, x: 0, y: 0, chosen: null, heat: null, maxUpload: null };

// ---------------------------------------------------------------- the model
async function loadModel() {
  try {
    const response = await fetch("/api/model");
    const model = await response.json();
    state.maxUpload = model.limits && model.limits.max_upload_bytes;
    $("model-line").textContent = `model ${model.name} (${model.bundled ? "bundled with the package" : "yours"}), ` +
      `backend ${model.backend}, ${model.n_params} parameters`;
    $("bundled-warning").hidden = !model.bundled;
    const t = model.training || {};
    const metrics = t.test_metrics || {};
    const per = " (per 1 cm\u00b2 patch)";
    fillList($("model-meta"), [
      ["file", model.name],
      ["trained on", t.data || (model.metadata && model.metadata.patches) || "not recorded"],
      ["epochs", epochs(t)],
      ["test accuracy" + per, fmt(metrics.accuracy)],
      ["test ROC AUC" + per, fmt(metrics.roc_auc)],
      ["sensitivity" + per, fmt(metrics.sensitivity)],
      ["specificity" + per, fmt(metrics.specificity)],
      ...wholeImageRows(t.whole_image),
      ["architecture", model.architecture ? `conv ${model.architecture.channels.join(", ")} of ` +
        `${model.architecture.kernel_size}x${model.architecture.kernel_size}, global max pool, dense` : ""],
      ["warning", model.warning || ""],
    ]);
  } catch (e) {
    $("model-line").textContent = "could not read the model description";
  }
}

function wholeImageRows(w) {
  // Figures per whole mammogram, only where the model's metadata records them (the bundled
  // model made by `python -m shallowcnn.web.bundled` does); nothing is shown otherwise.
  if (!w) return [];
  const located = w.localization || {};
  return [
    ["whole images (test)", `${w.images} images, ${w.clusters} clusters, p \u2265 ${Number(w.threshold).toFixed(3)}`],
    ["clusters found", fmt(w.clusters_found)],
    ["false positives per image", fmt(w.fp_per_image, 2)],
    ["localization error", located.hits ? `median ${fmt(located.median_mm, 2)} mm, ` +
      `90th percentile ${fmt(located.p90_mm, 2)} mm (${located.hits} hits)` : ""],
  ];
}

function epochs(t) {
  // the bundled model records {epochs, best_epoch}; `shallowcnn train` records {config, best}
  const total = t.epochs !== undefined ? t.epochs : t.config && t.config.epochs;
  const best = t.best_epoch !== undefined ? t.best_epoch : t.best && t.best.epoch;
  if (total === undefined) return "not recorded";
  return best !== undefined ? `${total} (best ${best})` : String(total);
}

function toStage(v) {
  return (v + 0.5) / state.result.image.scale_original_px_per_scanned_px;
}

function fmt(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "";
}

function fillList(dl, rows) {
  dl.replaceChildren();
  for (const [name, value] of rows) {
    if (value === "" || value === null || value === undefined) continue;
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    dl.append(dt, dd);
  }
}

// ---------------------------------------------------------------- choosing a file
function chooseFile(file) {
  state.file = file || null;
  $("file-name").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : "no file chosen";
  $("scan-button").disabled = !file;
  showError("");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setupUpload() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
  });
  $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); upload(); });
}

// ---------------------------------------------------------------- uploading and progress
function upload() {
  const file = state.file;
  if (!file) return;
  if (state.maxUpload && file.size > state.maxUpload) {
    showError(`${file.name} is larger than the server's limit of ${(state.maxUpload / 1048576).toFixed(0)} MiB`);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  const xhr = new XMLHttpRequest();
  const progress = $("progress");
  let timer = null;
  $("progress-box").hidden = false;
  $("scan-button").disabled = true;
  showError("");
  progress.value = 0;
  $("status").textContent = "uploading\u2026";
  // Real progress while the bytes go up; then the scan runs on the server, shown with an
  // indeterminate bar and the seconds elapsed.
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total;
  });
  xhr.upload.addEventListener("load", () => {
    const started = Date.now();
    progress.removeAttribute("value");
    const tick = () => { $("status").textContent = `scanning\u2026 ${((Date.now() - started) / 1000).toFixed(0)} s`; };
    tick();
    timer = setInterval(tick, 500);
  });
  xhr.addEventListener("loadend", () => {
    clearInterval(timer);
    $("scan-button").disabled = !state.file;
    $("progress-box").hidden = true;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    if (xhr.status === 200 && body) {
      showResult(body);
    } else {
      showError(body && body.error ? `${xhr.status}: ${body.error}` : `upload failed (${xhr.status || "no answer"})`);
    }
  });
  xhr.open("POST", "/api/scan");
  xhr.responseType = "text";
  xhr.send(form);
}

// ---------------------------------------------------------------- the result
function showResult(r) {
  state.result = r;
  state.chosen = null;
  $("threshold").value = r.scan.threshold;      // the model's operating point (its metadata), else 0.5
  $("result").hidden = false;
  const img = r.image;
  const stage = $("stage");
  stage.style.width = `${img.scanned_width}px`;
  stage.style.height = `${img.scanned_height}px`;
  $("marks").setAttribute("viewBox", `0 0 ${img.scanned_width} ${img.scanned_height}`);
  $("mammogram").src = r.urls.image;
  $("download-overlay").hidden = !r.urls.overlay;
  if (r.urls.overlay) $("download-overlay").href = r.urls.overlay;
  $("window-figure").hidden = true;
  fillList($("image-meta"), [
    ["file", `${r.file.name} (${r.file.format}, ${(r.file.bytes / 1048576).toFixed(1)} MB)`],
    ["size", `${img.width} x ${img.height} pixels`],
    ["pixel spacing", `${img.pixel_spacing_mm.map((v) => v.toFixed(3)).join(" x ")} mm` +
      (img.pixel_size_note ? ` (${img.pixel_size_note})` : ` (${img.pixel_size_source})`)],
    ["scanned at 0.07 mm", `${img.scanned_width} x ${img.scanned_height} pixels`],
    ["laterality", img.laterality || "not given"],
    ["view", img.view || "not given"],
    ["transfer syntax", img.transfer_syntax || ""],
    ["windows scanned", `${r.scan.windows_scanned} (stride ${r.scan.stride} px)`],
    ["time", `${r.timings.total_s.toFixed(1)} s (scan ${r.timings.scan_s.toFixed(1)} s)`],
  ]);
  loadHeatmap(r);
  fitView();
  applyThreshold();
}

async function loadHeatmap(r) {
  // heatmap.png holds one grey pixel per window: 0 = not scanned, else 1 + 254 p.
  const picture = new Image();
  picture.src = r.urls.heatmap;
  await picture.decode();
  const scratch = document.createElement("canvas");
  scratch.width = r.heatmap.cols;
  scratch.height = r.heatmap.rows;
  const ctx = scratch.getContext("2d");
  ctx.drawImage(picture, 0, 0);
  state.heat = ctx.getImageData(0, 0, scratch.width, scratch.height).data;
  const canvas = $("heatmap");
  const s = r.heatmap.stride;
  const [cy, cx] = r.heatmap.first_centre_scanned_px;
  canvas.width = r.heatmap.cols;
  canvas.height = r.heatmap.rows;
  // cell (k, l) is centred on window (k, l)'s centre: cx + l s, cy + k s
  canvas.style.left = `${cx - s / 2}px`;
  canvas.style.top = `${cy - s / 2}px`;
  canvas.style.width = `${r.heatmap.cols * s}px`;
  canvas.style.height = `${r.heatmap.rows * s}px`;
  drawHeatmap();
}

// inferno-like colour ramp, p in [0, 1] -> [r, g, b]
const RAMP = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function colour(p) {
  const t = Math.min(0.9999, Math.max(0, p)) * (RAMP.length - 1);
  const i = Math.floor(t), f = t - i;
  return RAMP[i].map((v, c) => Math.round(v + f * (RAMP[i + 1][c] - v)));
}

function drawHeatmap() {
  const r = state.result;
  if (!r || !state.heat) return;
  const threshold = Number($("threshold").value);
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < canvas.width * canvas.height; i++) {
    const v = state.heat[4 * i];
    const p = (v - 1) / 254;
    if (v === 0 || p < threshold) continue;       // transparent: not scanned or below threshold
    const [red, green, blue] = colour(p);
    out.data.set([red, green, blue, 255], 4 * i);
  }
  ctx.putImageData(out, 0, 0);
  canvas.style.opacity = $("opacity").value;
}

function shownDetections() {
  const threshold = Number($("threshold").value);
  return state.result.candidates.filter((d) => d.probability >= threshold);
}

function applyThreshold() {
  const r = state.result;
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  if (!r) return;
  drawHeatmap();
  const detections = shownDetections();
  $("detection-count").textContent = `${detections.length} at p \u2265 ${threshold.toFixed(2)}`;
  const list = $("detections");
  const marks = $("marks");
  list.replaceChildren();
  marks.replaceChildren();
  const radius = r.scan.window_size / 2;
  detections.forEach((d, k) => {
    const li = document.createElement("li");
    li.textContent = `p = ${d.probability.toFixed(3)} at x ${Math.round(d.x)}, y ${Math.round(d.y)}`;
    li.dataset.index = String(r.candidates.indexOf(d));
    li.addEventListener("click", () => choose(d, true));
    list.append(li);
    const ns = "http://www.w3.org/2000/svg";
    const circle = document.createElementNS(ns, "circle");
    circle.setAttribute("cx", toStage(d.x));
    circle.setAttribute("cy", toStage(d.y));
    circle.setAttribute("r", radius);
    circle.dataset.index = li.dataset.index;
    circle.addEventListener("click", () => choose(d, false));
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", toStage(d.x) + radius * 0.75);
    label.setAttribute("y", toStage(d.y) - radius * 0.75);
    label.setAttribute("font-size", radius / 2.5);
    label.textContent = String(k + 1);
    marks.append(circle, label);
  });
  const q = `?threshold=${threshold.toFixed(2)}`;
  $("download-json").href = r.urls.detections_json + q;
  $("download-csv").href = r.urls.detections_csv + q;
  if (state.chosen && detections.includes(state.chosen)) choose(state.chosen, false);
  else { state.chosen = null; $("evidence-box").hidden = true; $("window-figure").hidden = true; }
}

function choose(d, centre) {
  const r = state.result;
  state.chosen = d;
  const index = String(r.candidates.indexOf(d));
  for (const el of document.querySelectorAll("#detections li, #marks circle[data-index]")) {
    el.classList.toggle("chosen", el.dataset.index === index);
  }
  $("window-figure").hidden = false;
  $("window-image").src = d.window_url;
  const w = d.window;
  $("window-caption").textContent = `144 x 144 window (scanned pixels) at x ${Math.round(w.x)}, ` +
    `y ${Math.round(w.y)} (original pixels): p = ${d.probability.toFixed(3)}; the network saw the ` +
    `finding at x ${Math.round(d.x)}, y ${Math.round(d.y)} (filter ${d.strongest_filter})`;
  drawEvidence(d);
  if (centre) {
    const box = $("viewport").getBoundingClientRect();
    state.zoom = Math.max(state.zoom, Math.min(2, box.height / (4 * r.scan.window_size)));
    state.x = box.width / 2 - toStage(d.x) * state.zoom;
    state.y = box.height / 2 - toStage(d.y) * state.zoom;
    applyView();
  }
}

function drawEvidence(d) {
  // The chosen detection's window (dashed), its receptive field (square) and every filter's
  // maximum (dots; size by contribution, red rings for filters that pull the logit down).
  const ns = "http://www.w3.org/2000/svg";
  const marks = $("marks");
  for (const old of marks.querySelectorAll(".window, .field, .evidence")) old.remove();
  const box = (b, cls) => {
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", toStage(b.x));
    rect.setAttribute("y", toStage(b.y));
    const s = state.result.image.scale_original_px_per_scanned_px;
    rect.setAttribute("width", b.width / s);
    rect.setAttribute("height", b.height / s);
    rect.setAttribute("class", cls);
    marks.append(rect);
  };
  box(d.window, "window");
  box(d.receptive_field, "field");
  const evidence = (d.evidence || []).filter((e) => e.contribution !== 0);
  const largest = Math.max(...evidence.map((e) => Math.abs(e.contribution)), 1e-9);
  const list = $("evidence-list");
  list.replaceChildren();
  for (const e of [...evidence].sort((a, b) => b.contribution - a.contribution)) {
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", toStage(e.x));
    dot.setAttribute("cy", toStage(e.y));
    dot.setAttribute("r", 1.5 + 3.5 * Math.sqrt(Math.abs(e.contribution) / largest));
    dot.setAttribute("class", e.contribution > 0 ? "evidence" : "evidence against");
    dot.dataset.filter = String(e.filter);
    const title = document.createElementNS(ns, "title");
    title.textContent = `filter ${e.filter}: ${e.contribution > 0 ? "+" : ""}${e.contribution.toFixed(3)}`;
    dot.append(title);
    marks.append(dot);
    const li = document.createElement("li");
    li.textContent = `filter ${e.filter}: ${e.contribution > 0 ? "+" : ""}${e.contribution.toFixed(3)} ` +
      `at x ${Math.round(e.x)}, y ${Math.round(e.y)}`;
    if (e.contribution < 0) li.classList.add("against");
    list.append(li);
  }
  $("evidence-box").hidden = false;
}

// ---------------------------------------------------------------- contrast (window/level)
function applyContrast() {
  // grey g in [0, 1] -> (g - low) / (high - low), clipped: low/high = level -/+ width / 2
  const level = Number($("level").value) / 255;
  const width = Number($("width").value) / 255;
  const slope = 1 / width;
  const intercept = -(level - width / 2) / width;
  for (const f of document.querySelectorAll("#window-level feFuncR, #window-level feFuncG, #window-level feFuncB")) {
    f.setAttribute("slope", slope.toFixed(4));
    f.setAttribute("intercept", intercept.toFixed(4));
  }
}

// ---------------------------------------------------------------- zoom and pan
function applyView() {
  $("stage").style.transform = `translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
}

function fitView() {
  const r = state.result;
  if (!r) return;
  const box = $("viewport").getBoundingClientRect();
  state.zoom = Math.min(box.width / r.image.scanned_width, box.height / r.image.scanned_height);
  state.x = (box.width - r.image.scanned_width * state.zoom) / 2;
  state.y = (box.height - r.image.scanned_height * state.zoom) / 2;
  applyView();
}

function zoomAt(factor, px, py) {
  // keep the image point under (px, py) where it is
  const zoom = Math.min(16, Math.max(0.02, state.zoom * factor));
  state.x = px - ((px - state.x) * zoom) / state.zoom;
  state.y = py - ((py - state.y) * zoom) / state.zoom;
  state.zoom = zoom;
  applyView();
}

function setupViewer() {
  const viewport = $("viewport");
  viewport.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = viewport.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (e.target.tagName === "circle" && e.target.dataset.index !== undefined) return;
    drag = { x: e.clientX - state.x, y: e.clientY - state.y };
    viewport.setPointerCapture(e.pointerId);
    viewport.classList.add("panning");
  });
  viewport.addEventListener("pointermove", (e) => {
    if (!drag) return;
    state.x = e.clientX - drag.x;
    state.y = e.clientY - drag.y;
    applyView();
  });
  const stop = () => { drag = null; viewport.classList.remove("panning"); };
  viewport.addEventListener("pointerup", stop);
  viewport.addEventListener("pointercancel", stop);
  const centre = () => { const b = viewport.getBoundingClientRect(); return [b.width / 2, b.height / 2]; };
  $("zoom-in").addEventListener("click", () => zoomAt(1.5, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(1 / 1.5, ...centre()));
  $("zoom-fit").addEventListener("click", fitView);
  $("opacity").addEventListener("input", () => { $("heatmap").style.opacity = $("opacity").value; });
  $("threshold").addEventListener("input", applyThreshold);
  $("level").addEventListener("input", applyContrast);
  $("width").addEventListener("input", applyContrast);
  $("contrast-reset").addEventListener("click", () => {
    $("level").value = "128";
    $("width").value = "255";
    applyContrast();
  });
  window.addEventListener("resize", fitView);
}

setupUpload();
setupViewer();
loadModel();
