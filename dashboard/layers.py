"""The layer grids of Inside the network: a small component that draws every layer of one forward
pass in the browser, and says which unit was clicked.

Python sends each layer's values once, quantised to one byte a value against the layer's own scale
(`encode`); the browser paints each channel's map on its own <canvas> at its real resolution
(scaled up, pixels kept square), so the grids wrap on a phone and a click names the channel. One
colour scale per layer: where a layer has negative values, blue is negative, black is 0 and orange
is positive, each as far as the layer's largest magnitude; where it has none (after a ReLU),
black is 0 and white its largest value. The element records the stamp of the forward pass it last
drew (`data-drawn`), which the latency benchmark waits for.
"""
from __future__ import annotations

import base64
import hashlib

import numpy as np
import streamlit as st

from core.analysis.inside import Layer

LAYERS_HTML = """<div class="inside-layers"></div>"""
LAYERS_CSS = """.inside-layers { display: flex; flex-direction: column; gap: 0.9rem; }
.inside-layer h4 { margin: 0 0 0.25rem 0; font-size: 0.95rem; font-weight: 600; overflow-wrap: anywhere; }
.inside-layer h4 small { font-weight: 400; opacity: 0.75; }
.inside-scale { display: flex; align-items: center; gap: 0.4rem; font-size: 0.75rem; opacity: 0.85; margin-bottom: 0.3rem; }
.inside-scale canvas { width: 7rem; height: 0.6rem; border: 1px solid rgba(128, 128, 128, 0.4); }
.inside-grid { display: flex; flex-wrap: wrap; gap: 3px; }
.inside-grid canvas { image-rendering: pixelated; cursor: pointer; border: 1px solid transparent; }
.inside-grid canvas.picked { border-color: #f58518; outline: 2px solid #f58518; }
.inside-strip canvas { max-width: 100%; }
.inside-digits { display: grid; grid-template-columns: repeat(10, minmax(1.6rem, 3rem)); gap: 2px; font-size: 0.75rem; }
.inside-digits div { text-align: center; }
.inside-digits i { display: block; height: 2.2rem; background: rgba(128, 128, 128, 0.15); position: relative; cursor: pointer; }
.inside-digits b { position: absolute; bottom: 0; left: 0; right: 0; background: #4c78a8; }
.inside-digits .top b { background: #f58518; }
.inside-digits .top { font-weight: 700; }"""
LAYERS_JS = """export default function (component) {
  const { parentElement, data, setStateValue } = component;
  const root = parentElement.querySelector(".inside-layers");
  const key = data.stamp + "|" + JSON.stringify(data.picked);
  if (root.dataset.key === key) return;
  root.dataset.key = key;
  const lut = (signed) => {
    const t = new Uint8ClampedArray(256 * 4);
    for (let c = 0; c < 256; c++) {
      let r, g, b;
      if (signed) {
        const v = (c - 127.5) / 127.5, a = Math.abs(v);
        [r, g, b] = v < 0 ? [66 * a, 133 * a, 244 * a] : [245 * a, 133 * a, 24 * a];
      } else { r = g = b = c; }
      t.set([r, g, b, 255], c * 4);
    }
    return t;
  };
  const tables = { signed: lut(true), plain: lut(false) };
  const bytesOf = (text) => Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  const paint = (canvas, w, h, bytes, offset, table) => {
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
    for (let i = 0; i < w * h; i++) img.data.set(table.subarray(bytes[offset + i] * 4, bytes[offset + i] * 4 + 4), i * 4);
    ctx.putImageData(img, 0, 0);
  };
  const pick = (layer, unit) => setStateValue("unit", { layer, unit, stamp: data.stamp + ":" + layer + ":" + unit + ":" + Date.now() });
  const fragment = document.createDocumentFragment();
  data.layers.forEach((layer, li) => {
    const box = document.createElement("section");
    box.className = "inside-layer";
    const head = document.createElement("h4");
    head.textContent = layer.title + " ";
    const shape = document.createElement("small");
    shape.textContent = layer.shape.join(" × ") + (layer.note ? " · " + layer.note : "");
    head.appendChild(shape);
    box.appendChild(head);
    const table = layer.signed ? tables.signed : tables.plain;
    if (layer.scale) {
      const scale = document.createElement("div");
      scale.className = "inside-scale";
      const bar = document.createElement("canvas");
      paint(bar, 256, 1, Uint8Array.from({ length: 256 }, (_, i) => i), 0, table);
      const low = document.createElement("span"), high = document.createElement("span"), zero = document.createElement("span");
      low.textContent = layer.low; high.textContent = layer.high; zero.textContent = layer.zero;
      scale.append(low, bar, high, zero);
      box.appendChild(scale);
    }
    const bytes = bytesOf(layer.data);
    if (layer.kind === "digits") {
      const grid = document.createElement("div");
      grid.className = "inside-digits";
      const top = layer.values.indexOf(Math.max(...layer.values));
      layer.values.forEach((v, d) => {
        const cell = document.createElement("div");
        if (d === top) cell.className = "top";
        const bar = document.createElement("i"), fill = document.createElement("b");
        fill.style.height = (100 * bytes[d] / 255).toFixed(1) + "%";
        bar.appendChild(fill);
        bar.title = layer.labels[d];
        if (layer.unit) bar.addEventListener("click", () => pick(li, d));
        cell.append(bar, document.createTextNode(String(d)));
        grid.appendChild(cell);
      });
      box.appendChild(grid);
    } else {
      const grid = document.createElement("div");
      grid.className = "inside-grid" + (layer.kind === "strip" ? " inside-strip" : "");
      const [c, h, w] = layer.kind === "maps" ? layer.shape : [1, 1, layer.shape[0]];
      const px = layer.px;
      if (layer.kind === "maps") {
        for (let u = 0; u < c; u++) {
          const canvas = document.createElement("canvas");
          paint(canvas, w, h, bytes, u * h * w, table);
          canvas.style.width = (w * px) + "px"; canvas.style.height = (h * px) + "px";
          canvas.title = (layer.unitName || "channel") + " " + u;
          canvas.dataset.unit = u;
          if (data.picked && data.picked.layer === li && data.picked.unit === u) canvas.classList.add("picked");
          if (layer.unit) canvas.addEventListener("click", () => pick(li, u));
          grid.appendChild(canvas);
        }
      } else {
        const canvas = document.createElement("canvas");
        paint(canvas, w, 1, bytes, 0, table);
        canvas.style.width = (w * px) + "px"; canvas.style.height = "1.4rem";
        canvas.title = "click a unit";
        if (layer.unit) canvas.addEventListener("click", (e) => {
          const box = canvas.getBoundingClientRect();
          pick(li, Math.min(w - 1, Math.floor((e.clientX - box.left) * w / box.width)));
        });
        grid.appendChild(canvas);
      }
      box.appendChild(grid);
    }
    fragment.appendChild(box);
  });
  root.replaceChildren(fragment);
  root.dataset.drawn = data.stamp;
}"""


@st.cache_resource(show_spinner=False)
def _component():
    """The layers' component, registered once per process."""
    return st.components.v2.component("mnist_lab_inside_layers", html=LAYERS_HTML, css=LAYERS_CSS, js=LAYERS_JS,
                                      isolate_styles=True)


def quantise(values: np.ndarray) -> tuple[bytes, bool, float]:
    """(one byte a value, signed, the scale's end): a layer with negative values maps -m..0..m to
    0..127.5..255, one without maps 0..m to 0..255 (m: its largest magnitude)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    m = float(np.abs(values).max()) if values.size else 0.0
    signed = bool((values < 0).any())
    if m == 0:
        return bytes(values.size), signed, 0.0
    codes = 127.5 + 127.5 * values / m if signed else 255 * values / m
    return np.clip(np.rint(codes), 0, 255).astype(np.uint8).tobytes(), signed, m


def _pixels(height: int) -> int:
    """How many screen pixels a map's pixel gets: about 42-56 px a map, never less than 2."""
    return max(2, round(48 / max(height, 1)))


def encode(layers: list[Layer]) -> list[dict]:
    """The layers as the component draws them (the input, maps, strips, then the logits and
    probabilities as ten labelled bars)."""
    shown = []
    for i, layer in enumerate(layers):
        data, signed, m = quantise(layer.values)
        entry = {"title": _title(layer), "shape": list(layer.shape), "signed": signed,
                 "data": base64.b64encode(data).decode(), "unit": layer.role not in ("input", "probabilities"),
                 "note": ""}
        if layer.role == "probabilities":
            values = [float(v) for v in layer.values]
            entry |= {"kind": "digits", "values": values, "labels": [f"{d}: {v:.1%}" for d, v in enumerate(values)],
                      "data": base64.b64encode(np.clip(np.rint(np.asarray(values) * 255), 0, 255)
                                               .astype(np.uint8).tobytes()).decode(), "scale": False}
        elif layer.role == "logits":
            values = [float(v) for v in layer.values]
            low = min(values)
            span = (max(values) - low) or 1.0
            entry |= {"kind": "digits", "values": values, "labels": [f"{d}: {v:.3g}" for d, v in enumerate(values)],
                      "data": base64.b64encode(np.clip(np.rint((np.asarray(values) - low) / span * 255), 0, 255)
                                               .astype(np.uint8).tobytes()).decode(), "scale": False,
                      "note": "a bar's height: its logit above the lowest"}
        else:
            kind = "maps" if layer.maps else "strip"
            entry |= {"kind": kind, "px": _pixels(layer.shape[1]) if kind == "maps" else max(4, min(12, 640 // max(layer.shape[0], 1))),
                      "scale": True, "low": f"{-m:.3g}" if signed else "0", "high": f"{m:.3g}",
                      "zero": "black = 0", "unitName": "channel" if kind == "maps" else "unit"}
        shown.append(entry)
    return shown


def _title(layer: Layer) -> str:
    if layer.role == "input":
        return "Input, as the model receives it (normalised)"
    if layer.role == "probabilities":
        return "Probabilities"
    suffix = {"penultimate": " · penultimate features", "logits": " · logits"}.get(layer.role, "")
    return f"{layer.name} · {layer.what}{suffix}"


def stamp_of(*parts: bytes) -> str:
    return hashlib.sha1(b"".join(parts)).hexdigest()[:16]


def layer_grids(layers: list[Layer], stamp: str, picked: dict | None, key: str):
    """Draw the layers; returns the component's result (its `unit`: the last unit clicked,
    {layer, unit, stamp}, or None)."""
    return _component()(key=key, data={"layers": encode(layers), "stamp": stamp, "picked": picked},
                        default={"unit": None}, on_unit_change=lambda: None)
