"""The drawing pad that Sketch and Inside the network share: a <canvas> drawn on with the pointer
(mouse, pen or finger), white ink on black like MNIST, and its drawing as MNIST's 28x28 digit.

The canvas is the lab's own small component (PAD_JS): it sends the drawing the moment the pen is
lifted. streamlit-drawable-canvas, used before, waits 200 ms after each stroke before it sends
anything (its debounce is fixed), which alone was the Sketch page's whole latency budget.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st
from PIL import Image

from core.data.images import ImageError, to_mnist

CANVAS = 280      # px, ten times MNIST's side
STROKE = 18       # px on the canvas: about MNIST's 2 px pen after scaling the digit to 20 px


def bump_canvas(key: str = "sketch") -> None:
    """A new key gives a fresh, empty canvas (the Clear button)."""
    st.session_state[f"{key}_canvas_n"] = st.session_state.get(f"{key}_canvas_n", 0) + 1


# The pad: a <canvas> drawn on with the pointer (mouse, pen or finger), white ink on black like
# MNIST. On each lifted pen it sends the canvas as a PNG data URL in its "drawing" state (null
# once Undo has taken every stroke back). Streamlit calls the function again on every run of the
# fragment; the strokes live on the element, so a rerun keeps the drawing.
PAD_HTML = """<div class="pad"><canvas class="sketch-pad"></canvas>
<button type="button" class="pad-undo" title="take back the last stroke">Undo</button></div>"""
PAD_CSS = """.pad { display: inline-flex; flex-direction: column; gap: 0.3rem; align-items: flex-start; }
.sketch-pad { touch-action: none; cursor: crosshair; border-radius: 0.25rem; display: block; }
.pad-undo { font: inherit; font-size: 0.8rem; padding: 0.1rem 0.6rem; border-radius: 0.4rem; cursor: pointer;
  color: var(--st-text-color); background: transparent; border: 1px solid rgba(128, 128, 128, 0.4); }"""
PAD_JS = """export default function (component) {
  const { parentElement, data, setStateValue } = component;
  let pad = parentElement.__sketchPad;
  if (!pad) {
    const canvas = parentElement.querySelector("canvas");
    canvas.width = canvas.height = data.size;
    canvas.style.width = canvas.style.height = data.size + "px";
    const ctx = canvas.getContext("2d");
    pad = parentElement.__sketchPad = { canvas, ctx, strokes: [], current: null };
    const paint = () => {
      ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.strokeStyle = ctx.fillStyle = "#fff"; ctx.lineWidth = pad.width;
      ctx.lineCap = ctx.lineJoin = "round";
      for (const s of pad.strokes) {
        ctx.beginPath(); ctx.moveTo(s[0][0], s[0][1]);
        for (const [x, y] of s.length > 1 ? s.slice(1) : s) ctx.lineTo(x, y);
        ctx.stroke();
      }
    };
    const send = () => pad.setStateValue("drawing", pad.strokes.length ? canvas.toDataURL("image/png") : null);
    const at = (e) => {
      const box = canvas.getBoundingClientRect();
      return [(e.clientX - box.left) * canvas.width / box.width, (e.clientY - box.top) * canvas.height / box.height];
    };
    canvas.addEventListener("pointerdown", (e) => {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      canvas.setPointerCapture(e.pointerId);
      pad.current = [at(e)]; pad.strokes.push(pad.current); paint();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!pad.current) return;
      const [x, y] = at(e), [px, py] = pad.current[pad.current.length - 1];
      pad.current.push([x, y]);
      ctx.beginPath(); ctx.moveTo(px, py); ctx.lineTo(x, y); ctx.stroke();
    });
    const up = () => { if (pad.current) { pad.current = null; send(); } };
    canvas.addEventListener("pointerup", up);
    canvas.addEventListener("pointercancel", up);
    parentElement.querySelector(".pad-undo").addEventListener("click", () => {
      if (pad.current || !pad.strokes.length) return;
      pad.strokes.pop(); paint(); send();
    });
    pad.width = data.stroke; paint();
  }
  pad.setStateValue = setStateValue;
  pad.width = data.stroke;
}"""


@st.cache_resource(show_spinner=False)
def _pad():
    """The pad's component, registered once per process."""
    return st.components.v2.component("mnist_lab_sketch_pad", html=PAD_HTML, css=PAD_CSS, js=PAD_JS,
                                      isolate_styles=True)


def decode_drawing(data_url: str | None) -> np.ndarray | None:
    """The pad's PNG data URL as an array, or None for no drawing: grey levels (H, W) where the
    drawing is opaque all over (the pad paints black under its strokes), else RGBA (H, W, 4)
    (to_mnist reads a transparent background's ink from the alpha channel)."""
    if not data_url or ";base64," not in data_url:
        return None
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(";base64,", 1)[1]))) as image:
        rgba = image.convert("RGBA")
        opaque = rgba.getchannel("A").getextrema() == (255, 255)
        return np.asarray(rgba.convert("L") if opaque else rgba)


def canvas_digit(key: str = "sketch") -> np.ndarray | None:
    """The pad and its Clear button; the drawing as MNIST's 28x28 digit on [0, 1], or None while it
    is empty (or nothing on it reads as ink). `key` tells two pages' pads apart."""
    result = _pad()(key=f"{key}_canvas_{st.session_state.get(f'{key}_canvas_n', 0)}",
                    data={"size": CANVAS, "stroke": STROKE}, default={"drawing": None},
                    on_drawing_change=lambda: None)
    st.button("Clear", icon=":material/ink_eraser:", on_click=bump_canvas, args=(key,), key=f"{key}_clear",
              help="start again (Undo, under the pad, takes back the last stroke)")
    image = decode_drawing(getattr(result, "drawing", None))
    if image is None:
        return None
    try:
        return to_mnist(image)
    except ImageError:
        return None
