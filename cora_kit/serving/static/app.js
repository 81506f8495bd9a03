// The page: load a panorama into the viewer, fetch the tile geometry, ask the server.
"use strict";

const $ = (id) => document.getElementById(id);
const viewer = new PanoViewer($("pano"), $("overlay"));
window.coraViewer = viewer;  // for tests and the console
let currentFile = null;

function status(text, kind) {
  const el = $("status");
  el.textContent = text || "";
  el.className = "status" + (kind ? " " + kind : "");
}

async function getJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  const body = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(`${resp.status}: ${body.detail || resp.statusText}`);
  return body;
}

async function loadInfo() {
  try {
    const h = await getJSON("/health");
    const m = h.model;
    $("model").textContent = `${m.name} · ${m.resampler} + ${m.loss} · ${m.tiler} · ${m.device} (${m.precision})`;
    $("model").title = m.source;
  } catch (e) {
    $("model").textContent = `model info unavailable (${e.message})`;
  }
  try {
    const g = await getJSON("/v1/geometry");
    viewer.setGeometry(g);
    $("geometry-note").textContent =
      `${g.layout}: ${g.fov_note}; patches on the ${g.grid[0]}x${g.grid[1]} grid the overlap loss matches` +
      " (solid: a tile's patch, dashed: the neighbour's patch that sees the same ray)";
  } catch (e) {
    $("geometry-note").textContent = `geometry unavailable (${e.message})`;
  }
}

function openFile(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg)$/.test(file.type) && !/\.(png|jpe?g)$/i.test(file.name)) {
    status(`${file.name}: not a PNG or JPEG file`, "error");
    return;
  }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    if (Math.abs(img.width / img.height - 2) > 0.02) {
      status(`${file.name}: ${img.width}x${img.height} is not 2:1 (an equirectangular panorama is twice as wide as high)`, "error");
      URL.revokeObjectURL(url);
      return;
    }
    currentFile = file;
    if (viewer.error) {
      status(viewer.error, "error");
    } else {
      viewer.setImage(img);
      viewer.look(0, 0, 100);
    }
    URL.revokeObjectURL(url);
    $("stage").dataset.state = "ready";
    $("drop").hidden = true;
    $("hint").hidden = false;
    $("filename").textContent = `${file.name} · ${img.width}x${img.height}`;
    $("ask").disabled = false;
    status("");
  };
  img.onerror = () => { status(`${file.name}: the browser cannot decode this image`, "error"); URL.revokeObjectURL(url); };
  img.src = url;
}

async function ask(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!currentFile) { status("open a panorama first", "error"); return; }
  if (!query) { status("type a question first", "error"); return; }
  const body = new FormData();
  body.append("image", currentFile, currentFile.name);
  body.append("query", query);
  $("ask").disabled = true;
  status("asking…", "busy");
  const t0 = performance.now();
  try {
    const resp = await fetch("/v1/caption", { method: "POST", body, credentials: "same-origin" });
    const data = await resp.json().catch(() => ({ detail: resp.statusText }));
    if (!resp.ok) throw new Error(`${resp.status}: ${data.detail || resp.statusText}`);
    const roundTrip = performance.now() - t0;
    $("answer").hidden = false;
    $("answer-query").textContent = `Q: ${data.query}`;
    $("caption").textContent = data.caption || "(empty answer)";
    $("elapsed").textContent =
      `${data.elapsed_ms.toFixed(0)} ms on the server (batch of ${data.batch_size}) · ${roundTrip.toFixed(0)} ms round trip with the upload`;
    const li = document.createElement("li");
    li.textContent = `${data.query} → ${data.caption || "(empty)"} (${data.elapsed_ms.toFixed(0)} ms)`;
    $("history").prepend(li);
    status("");
  } catch (e) {
    status(e.message, "error");
  } finally {
    $("ask").disabled = false;
  }
}

$("file").addEventListener("change", (e) => openFile(e.target.files[0]));
$("ask-form").addEventListener("submit", ask);
$("toggle-tiles").addEventListener("change", (e) => { viewer.showTiles = e.target.checked; viewer.render(); });
$("toggle-patches").addEventListener("change", (e) => { viewer.showPatches = e.target.checked; viewer.render(); });
$("reset").addEventListener("click", () => viewer.look(0, 0, 100));
$("pano").addEventListener("look", (e) => {
  const d = e.detail;
  $("view-readout").textContent = `yaw ${d.yaw.toFixed(0)}° · pitch ${d.pitch.toFixed(0)}° · fov ${d.hfov.toFixed(0)}°`;
});
const stage = $("stage");
["dragenter", "dragover"].forEach((t) => stage.addEventListener(t, (e) => { e.preventDefault(); stage.classList.add("dragging"); }));
["dragleave", "drop"].forEach((t) => stage.addEventListener(t, (e) => { e.preventDefault(); stage.classList.remove("dragging"); }));
stage.addEventListener("drop", (e) => openFile(e.dataTransfer.files[0]));
if (viewer.error) status(viewer.error, "error");
loadInfo();
