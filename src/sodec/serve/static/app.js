// SODEC web demo: upload, poll the job, show the comparison. No framework, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
let INFO = null;
let current = null; // the compress job being shown: {id, result, t0, sodecShownS}
const polls = { compress: null, decode: null }; // the latest poll of each panel; older ones stop

// ------------------------------------------------------------------------------------------------ formatting

const fmtInt = (n) => n.toLocaleString("en-US");
const fmtBpp = (v) => v.toFixed(4);
const fmtMs = (v) => (v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms");
const fmtBytes = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : n >= 1e3 ? (n / 1e3).toFixed(1) + " kB" : n + " bytes");
const METRIC_DIGITS = { psnr: 2, ms_ssim: 4, delta_e: 2, lpips_vgg: 4, lpips_alex: 4, dists: 4 };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `the server answered ${resp.status} ${resp.statusText}`;
}

// ---------------------------------------------------------------------------------------------------- start

async function init() {
  try {
    const resp = await fetch("/api/info");
    INFO = await resp.json();
  } catch (e) {
    $("model-info").textContent = "Cannot reach the sodec server: is `sodec serve` still running?";
    return;
  }
  const rates = $("rate");
  for (const r of INFO.rates) {
    const label = INFO.rates.length === 1 ? `${r}` : r === INFO.rates[0] ? `${r} (smallest files)`
      : r === INFO.rates[INFO.rates.length - 1] ? `${r} (best quality)` : `${r}`;
    rates.append(el("option", { value: r, text: label }));
  }
  rates.value = INFO.default_rate;
  const base = INFO.baselines.map((b) => b.label + (b.available ? "" : " (unavailable)")).join(", ");
  $("model-info").textContent = `Model ${INFO.model}, rate points ${INFO.rates.join(", ")} · compared with ${base} ` +
    `· sodec ${INFO.version}`;
  $("limits").textContent = `Limits: ${INFO.limits.text}. One image is coded at a time; up to ` +
    `${INFO.queue.max_waiting} more requests wait in line.`;
  $("photo").addEventListener("change", () => { $("compress-btn").disabled = !$("photo").files.length; });
  $("compress-btn").addEventListener("click", () => { if ($("photo").files.length) submitPhoto($("photo").files[0]); });
  $("example-btn").addEventListener("click", useExample);
  $("sodec-file").addEventListener("change", () => { $("decode-btn").disabled = !$("sodec-file").files.length; });
  $("decode-btn").addEventListener("click", () => { if ($("sodec-file").files.length) submitSodec($("sodec-file").files[0]); });
  $("slider").addEventListener("input", moveSlider);
  $("compare-with").addEventListener("change", () => showCompare($("compare-with").value));
  $("actual-size").addEventListener("change", () => $("viewer").classList.toggle("actual", $("actual-size").checked));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) submitPhoto(ev.dataTransfer.files[0]);
  });
  // a file dropped outside the drop zone must not make the browser leave the page
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
  moveSlider();
}

// ------------------------------------------------------------------------------------------------- uploads

function tooLarge(file) {
  if (INFO && file.size > INFO.limits.max_upload_bytes) {
    return `${file.name} is ${fmtBytes(file.size)}, larger than this demo's upload limit of ` +
      `${fmtBytes(INFO.limits.max_upload_bytes)} (start the server with a larger --max-upload-mb)`;
  }
  return null;
}

async function upload(url, file, statusBox, errorBox) {
  showError(errorBox, "");
  const big = tooLarge(file);
  if (big) { showError(errorBox, big); statusBox.textContent = ""; return null; }
  statusBox.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
  let resp;
  try {
    resp = await fetch(url, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  } catch (e) {
    statusBox.textContent = "";
    showError(errorBox, `Upload failed: ${e.message}. Is the server still running?`);
    return null;
  }
  if (resp.status !== 202) {
    statusBox.textContent = "";
    showError(errorBox, await errorText(resp));
    return null;
  }
  return (await resp.json()).job;
}

// Poll a job until it ends, handing every partial result to onUpdate: a compress job's result grows step by step
// (SODEC first, then each baseline, then the metrics), so the page fills in while the server works.
async function poll(panel, jobId, statusBox, errorBox, onUpdate, bar = null) {
  polls[panel] = jobId;
  const showBar = (value) => {
    if (!bar) return;
    bar.hidden = value === null || value === undefined;
    if (!bar.hidden) bar.value = value;
  };
  const stop = (state) => { statusBox.dataset.state = state; showBar(null); };
  for (;;) {
    if (polls[panel] !== jobId) return null; // a newer upload replaced this one
    let resp;
    try { resp = await fetch(`/api/jobs/${jobId}`, { cache: "no-store" }); } catch (e) {
      showError(errorBox, `Lost the connection to the server: ${e.message}`);
      statusBox.textContent = "";
      stop("error");
      return null;
    }
    if (!resp.ok) { showError(errorBox, await errorText(resp)); statusBox.textContent = ""; stop("error"); return null; }
    const job = await resp.json();
    if (job.state === "queued") {
      statusBox.textContent = job.position === 1 ? "Waiting: yours is next (the server is finishing another image " +
        "or still loading the model)…"
        : `Waiting in line: position ${job.position} (the server codes one image at a time)…`;
      showBar(null);
    } else if (job.state === "running") {
      const pct = job.progress === null || job.progress === undefined ? "" : `, ${Math.round(100 * job.progress)} %`;
      statusBox.textContent = `Working (${job.elapsed_s.toFixed(1)} s${pct}): ${job.stage}…`;
      showBar(job.progress);
    }
    if (job.result) onUpdate(job);
    if (job.state === "done") {
      const first = panel === "compress" && current && current.sodecShownS !== null
        ? ` SODEC's result was on the page after ${current.sodecShownS.toFixed(1)} s.` : "";
      statusBox.textContent = `Done in ${job.elapsed_s.toFixed(1)} s.${first}`;
      stop("done");
      return job;
    }
    if (job.state === "error") {
      statusBox.textContent = "";
      stop("error");
      showError(errorBox, job.error);
      return job;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function submitPhoto(file) {
  if (/\.sodec$/i.test(file.name)) {
    $("status").textContent = `${file.name} is a .sodec file: decoding it below.`;
    return submitSodec(file);
  }
  $("status").dataset.state = "uploading";
  const t0 = performance.now();
  const rate = $("rate").value;
  const jobId = await upload(`/api/compress?rate=${encodeURIComponent(rate)}&name=${encodeURIComponent(file.name)}`,
    file, $("status"), $("error"));
  if (!jobId) { $("status").dataset.state = "error"; return; }
  current = { id: jobId, result: null, t0, sodecShownS: null };
  $("status").dataset.state = "running";
  $("result").hidden = true;
  await poll("compress", jobId, $("status"), $("error"), (job) => render(job), $("progress"));
}

async function useExample() {
  try {
    const resp = await fetch("/api/example");
    const blob = await resp.blob();
    submitPhoto(new File([blob], "dandelions.png", { type: "image/png" }));
  } catch (e) {
    showError($("error"), `Cannot fetch the bundled photo: ${e.message}`);
  }
}

async function submitSodec(file) {
  $("decode-status").dataset.state = "uploading";
  $("decode-result").hidden = true;
  const jobId = await upload(`/api/decompress?name=${encodeURIComponent(file.name)}`, file,
    $("decode-status"), $("decode-error"));
  if (!jobId) { $("decode-status").dataset.state = "error"; return; }
  $("decode-status").dataset.state = "running";
  await poll("decode", jobId, $("decode-status"), $("decode-error"), (job) => renderDecode(job));
}

// -------------------------------------------------------------------------------------------------- result

const fileUrl = (jobId, key, download) => `/api/jobs/${jobId}/files/${encodeURIComponent(key)}` +
  (download ? "?download=1" : "");

function setSrc(img, url) {
  if (img.getAttribute("src") !== url) img.setAttribute("src", url);
}

function render(job) {
  const r = job.result;
  current.result = r;
  $("result").hidden = false;
  $("result-title").textContent = `Result: ${r.name}`;
  const target = r.target ? ` · SODEC file: ${fmtInt(r.target.bytes)} bytes = ${fmtBpp(r.target.bpp)} bpp` : "";
  $("result-summary").textContent = `${r.width}×${r.height} (${fmtInt(r.pixels)} pixels, ` +
    `${r.color_mode === "GRAY" ? "grayscale" : "colour"}), uploaded ${fmtBytes(r.upload_bytes)}${target}.`;
  const warn = $("warnings");
  warn.replaceChildren(...r.warnings.map((w) => el("li", { text: w })));

  // downloads and the compare selector
  const sodec = r.codecs.find((c) => c.id === "sodec");
  if (sodec && sodec.image && current.sodecShownS === null) {
    current.sodecShownS = (performance.now() - current.t0) / 1000; // from the click, upload included
  }
  const dl = $("download-sodec");
  if (sodec && sodec.file) {
    dl.href = fileUrl(job.id, sodec.file, true);
    dl.setAttribute("download", sodec.download_name);
    dl.textContent = `Download ${sodec.download_name} (${fmtInt(sodec.bytes)} bytes)`;
    dl.hidden = false;
  } else {
    dl.hidden = true;
  }
  const sel = $("compare-with");
  const options = r.codecs.filter((c) => c.image).map((c) => c.id);
  if (sel.dataset.options !== options.join(",")) {
    const keep = sel.value || "sodec";
    sel.replaceChildren(...r.codecs.filter((c) => c.image).map((c) => el("option", { value: c.id, text: c.label })));
    sel.dataset.options = options.join(",");
    sel.value = options.includes(keep) ? keep : options[0] || "";
  }
  setSrc($("view-before"), fileUrl(job.id, r.original));
  if (sel.value) showCompare(sel.value);

  renderTable(job);
  renderGallery(job);
}

function showCompare(id) {
  if (!current || !current.result) return;
  const c = current.result.codecs.find((x) => x.id === id);
  if (!c || !c.image) return;
  setSrc($("view-after"), fileUrl(current.id, c.image));
  $("after-tag").textContent = c.bytes !== null ? `${c.label} · ${fmtInt(c.bytes)} bytes` : c.label;
  $("compare-with").value = id;
}

function moveSlider() {
  const v = Number($("slider").value);
  $("view-after").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("divider").style.left = `${v}%`;
}

const STATE_TEXT = { waiting: "waiting", coding: "coding", measuring: "measuring" }; // "done": nothing shown
const hasNoFile = (c) => c.status === "unavailable" || c.status === "failed";

function sizeNote(c, target) {
  if (hasNoFile(c)) return c.status;
  if (c.bytes === null) return "…";
  if (c.id === "sodec") return "1×";
  const ratio = `${(c.bytes / target).toFixed(3)}×`;
  if (c.status === "below_floor") return `${ratio}, its minimum`;
  if (c.status === "above_ceiling") return `${ratio}, its maximum`;
  return ratio;
}

function renderTable(job) {
  const r = job.result;
  const metrics = r.metrics;
  const head = ["Codec", "Bytes", "bpp", "× SODEC size", "Encode", "Decode",
    ...metrics.map((m) => `${m.label} ${m.higher_is_better ? "↑" : "↓"}`), "Setting", "Files"];
  $("result-head").replaceChildren(...head.map((h) => el("th", { scope: "col", text: h })));
  const target = r.target ? r.target.bytes : null;
  const rows = r.codecs.map((c) => {
    const tr = el("tr", { "data-codec": c.id, "data-status": c.status, "data-state": c.state,
      class: c.status === "below_floor" ? "floor" : null });
    const td = (field, text, value, title) => el("td", { "data-field": field, "data-value": value, title, text });
    const missing = hasNoFile(c) ? "—" : "…"; // a value that will never come, or one still being computed
    const head = el("th", { scope: "row", text: c.label, title: c.library || null });
    if (STATE_TEXT[c.state]) head.append(el("span", { class: "state", text: STATE_TEXT[c.state] }));
    tr.append(head);
    tr.append(td("bytes", c.bytes === null ? missing : fmtInt(c.bytes), c.bytes));
    tr.append(td("bpp", c.bpp === null ? missing : fmtBpp(c.bpp), c.bpp));
    tr.append(td("size", target ? sizeNote(c, target) : "", null, c.note || null));
    tr.append(td("encode_ms", c.encode_ms === null ? missing : fmtMs(c.encode_ms), c.encode_ms));
    tr.append(td("decode_ms", c.decode_ms === null ? missing : fmtMs(c.decode_ms), c.decode_ms));
    for (const m of metrics) {
      let text, title = null, cls = null;
      const v = c.metrics[m.name];
      if (hasNoFile(c)) text = "—";
      else if (!m.available) { text = "unavailable"; title = m.reason; cls = "na"; }
      else if (v === undefined) { text = "…"; title = "being computed"; cls = "pending"; }
      else if (v === null) { text = "n/a"; title = c.metric_notes[m.name] || null; cls = "na"; }
      else text = v.toFixed(METRIC_DIGITS[m.name] ?? 4);
      const cell = td(m.name, text, v ?? null, title);
      if (cls) cell.className = cls;
      tr.append(cell);
    }
    tr.append(td("setting", c.setting || "", null));
    const files = el("td", { "data-field": "files" });
    if (c.file) files.append(el("a", { href: fileUrl(job.id, c.file, true), download: c.download_name, class: "file", text: c.file.split(".").pop() }));
    if (c.image) files.append(" ", el("a", { href: fileUrl(job.id, c.image, true), download: c.download_name ? c.download_name.replace(/\.[^.]+$/, ".png") : null, class: "file", text: "png" }));
    tr.append(files);
    return tr;
  });
  $("result-body").replaceChildren(...rows);

  const notes = [];
  for (const c of r.codecs) if (c.note && c.status !== "ok" && c.status !== "pending") notes.push(`${c.label}: ${c.note}.`);
  for (const m of metrics) if (!m.available) notes.push(`${m.label} unavailable: ${m.reason}`);
  const skipped = new Set();
  for (const c of r.codecs) for (const [k, v] of Object.entries(c.metric_notes || {})) skipped.add(`${METRIC_LABEL(metrics, k)}: ${v}`);
  for (const s of skipped) notes.push(s);
  notes.push("Times are one encode and one decode on this server's CPU; a baseline's encode time is its final " +
    "encode (the search for the right setting took several).");
  $("notes").replaceChildren(...notes.map((n) => el("li", { text: n })));
}

const METRIC_LABEL = (metrics, name) => (metrics.find((m) => m.name === name) || { label: name }).label;

function renderGallery(job) {
  const r = job.result;
  const figures = [{ id: "original", label: "Original", image: r.original, caption: `${r.width}×${r.height}` }]
    .concat(r.codecs.filter((c) => c.image).map((c) => ({
      id: c.id, label: c.label, image: c.image,
      caption: `${fmtInt(c.bytes)} bytes · ${fmtBpp(c.bpp)} bpp` +
        (c.metrics.psnr !== undefined && c.metrics.psnr !== null ? ` · ${c.metrics.psnr.toFixed(2)} dB` : ""),
    })));
  const gallery = $("gallery");
  const have = new Map([...gallery.children].map((f) => [f.dataset.codec, f]));
  const out = figures.map((f) => {
    let fig = have.get(f.id);
    if (!fig) {
      const img = el("img", { alt: f.label, loading: "lazy" });
      fig = el("figure", { "data-codec": f.id }, img, el("figcaption"));
      if (f.id !== "original") {
        fig.classList.add("pick");
        fig.title = "Show in the before/after viewer";
        fig.addEventListener("click", () => { showCompare(f.id); $("viewer").scrollIntoView({ behavior: "smooth" }); });
      }
    }
    setSrc(fig.querySelector("img"), fileUrl(job.id, f.image));
    fig.querySelector("figcaption").replaceChildren(el("strong", { text: f.label }), el("br"), f.caption);
    return fig;
  });
  gallery.replaceChildren(...out);
}

function renderDecode(job) {
  const r = job.result;
  if (!r || !r.header) return;
  const h = r.header;
  const rows = [
    ["file", r.name], ["format version", h.format_version], ["model", h.model], ["model hash", h.model_hash],
    ["rate point", h.rate_point], ["size", `${h.width}×${h.height}`], ["colour mode", h.color_mode],
    ["bytes", fmtInt(h.bytes)], ["bpp", fmtBpp(h.bpp)], ["checksum", h.checksum],
  ];
  if (r.decode_ms !== undefined) rows.push(["decode time", fmtMs(r.decode_ms)]);
  const body = $("header-table").tBodies[0];
  body.replaceChildren(...rows.map(([k, v]) => el("tr", { "data-field": k.replace(/ /g, "_") },
    el("th", { scope: "row", text: k }), el("td", { text: String(v) }))));
  $("decode-result").hidden = false;
  if (r.image) {
    setSrc($("decoded-img"), fileUrl(job.id, r.image));
    const a = $("download-png");
    a.href = fileUrl(job.id, r.image, true);
    a.setAttribute("download", r.download_name);
    a.textContent = `Download ${r.download_name}`;
    a.hidden = false;
  } else {
    $("download-png").hidden = true;
  }
}

document.addEventListener("DOMContentLoaded", init);
