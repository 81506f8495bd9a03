// cora-kit 360° viewer: an equirectangular panorama on the inside of a sphere (WebGL),
// with an overlay canvas for tile outlines and matching patches (lon/lat in degrees).
// Conventions (cora_kit.geometry): world x right, y up, z forward; longitude grows to the
// right, latitude upwards; ERP u = lon / 360 + 0.5, v = 0.5 - lat / 180.
"use strict";

const VERTEX = `#version 300 es
in vec2 pos;
out vec2 ndc;
void main() { ndc = pos; gl_Position = vec4(pos, 0.0, 1.0); }`;

const FRAGMENT = `#version 300 es
precision highp float;
in vec2 ndc;
out vec4 colour;
uniform sampler2D erp;
uniform vec3 right;
uniform vec3 up;
uniform vec3 forward;
uniform vec2 halfTan;   // tan(hfov / 2), tan(vfov / 2)
const float PI = 3.14159265358979;
void main() {
  vec3 d = normalize(ndc.x * halfTan.x * right + ndc.y * halfTan.y * up + forward);
  float lon = atan(d.x, d.z);
  float lat = asin(clamp(d.y, -1.0, 1.0));
  vec2 uv = vec2(fract(lon / (2.0 * PI) + 0.5), 0.5 - lat / PI);
  colour = texture(erp, uv);
}`;

function basis(yawDeg, pitchDeg) {
  const y = yawDeg * Math.PI / 180, p = pitchDeg * Math.PI / 180;
  const sy = Math.sin(y), cy = Math.cos(y), sp = Math.sin(p), cp = Math.cos(p);
  return {
    right: [cy, 0, -sy],
    up: [-sp * sy, cp, -sp * cy],
    forward: [cp * sy, sp, cp * cy],
  };
}

function lonlatToDir(lonDeg, latDeg) {
  const lon = lonDeg * Math.PI / 180, lat = latDeg * Math.PI / 180;
  const c = Math.cos(lat);
  return [c * Math.sin(lon), Math.sin(lat), c * Math.cos(lon)];
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

class PanoViewer {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.yaw = 0;
    this.pitch = 0;
    this.hfov = 100;
    this.geometry = null;
    this.showTiles = false;
    this.showPatches = false;
    this.loaded = false;
    this.gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: false });
    this.error = this.gl ? null : "WebGL 2 is not available in this browser: the 360° view needs it";
    if (this.gl) this._initGL();
    this._bindInput();
    new ResizeObserver(() => this.render()).observe(canvas);
  }

  _initGL() {
    const gl = this.gl;
    const shader = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    this.prog = prog;
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, "pos");
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    this.uniforms = Object.fromEntries(["erp", "right", "up", "forward", "halfTan"].map(
      (n) => [n, gl.getUniformLocation(prog, n)]));
    this.texture = gl.createTexture();
    this.maxTexture = gl.getParameter(gl.MAX_TEXTURE_SIZE);
  }

  // Show an image (HTMLImageElement or ImageBitmap) of a 2:1 panorama.
  setImage(image) {
    this.loaded = false;
    if (!this.gl) return;
    const gl = this.gl;
    let source = image;
    const w = image.width, h = image.height;
    if (w > this.maxTexture) {  // the GPU cannot hold it: shrink for display only
      const c = document.createElement("canvas");
      c.width = this.maxTexture;
      c.height = Math.round(this.maxTexture * h / w);
      c.getContext("2d").drawImage(image, 0, 0, c.width, c.height);
      source = c;
    }
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, source);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.loaded = true;
    this.render();
  }

  setGeometry(geometry) { this.geometry = geometry; this.render(); }

  look(yaw, pitch, hfov) {
    this.yaw = ((yaw + 180) % 360 + 360) % 360 - 180;
    this.pitch = Math.max(-89.9, Math.min(89.9, pitch));
    if (hfov !== undefined) this.hfov = Math.max(20, Math.min(140, hfov));
    this.render();
    this.canvas.dispatchEvent(new CustomEvent("look", { detail: { yaw: this.yaw, pitch: this.pitch, hfov: this.hfov } }));
  }

  _halfTan() {
    const w = this.canvas.clientWidth || 1, h = this.canvas.clientHeight || 1;
    const tx = Math.tan(this.hfov * Math.PI / 360);
    return [tx, tx * h / w];
  }

  _bindInput() {
    const c = this.overlay;
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, yaw: this.yaw, pitch: this.pitch };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const degPerPx = this.hfov / (c.clientWidth || 1);
      this.look(drag.yaw - (e.clientX - drag.x) * degPerPx, drag.pitch + (e.clientY - drag.y) * degPerPx);
    });
    const end = () => { drag = null; };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.look(this.yaw, this.pitch, this.hfov * Math.exp(e.deltaY * 0.001));
    }, { passive: false });
    c.tabIndex = 0;
    c.addEventListener("keydown", (e) => {
      const step = this.hfov / 10;
      const keys = {
        ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step],
      };
      if (keys[e.key]) {
        e.preventDefault();
        this.look(this.yaw + keys[e.key][0], this.pitch + keys[e.key][1]);
      } else if (e.key === "+" || e.key === "=") this.look(this.yaw, this.pitch, this.hfov / 1.15);
      else if (e.key === "-") this.look(this.yaw, this.pitch, this.hfov * 1.15);
    });
  }

  _resize(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  }

  render() {
    this._resize(this.canvas);
    this._resize(this.overlay);
    const b = basis(this.yaw, this.pitch);
    const [tx, ty] = this._halfTan();
    if (this.gl) {
      const gl = this.gl;
      gl.viewport(0, 0, this.canvas.width, this.canvas.height);
      gl.clearColor(0.08, 0.09, 0.11, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      if (this.loaded) {
        gl.useProgram(this.prog);
        gl.activeTexture(gl.TEXTURE0);
        gl.bindTexture(gl.TEXTURE_2D, this.texture);
        gl.uniform1i(this.uniforms.erp, 0);
        gl.uniform3fv(this.uniforms.right, b.right);
        gl.uniform3fv(this.uniforms.up, b.up);
        gl.uniform3fv(this.uniforms.forward, b.forward);
        gl.uniform2f(this.uniforms.halfTan, tx, ty);
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      }
    }
    this._drawOverlay(b, tx, ty);
  }

  // lon/lat (degrees) -> overlay pixel [x, y], or null when behind the camera.
  project(lon, lat, b, tx, ty) {
    const d = lonlatToDir(lon, lat);
    const z = dot(d, b.forward);
    if (z <= 1e-3) return null;
    const x = dot(d, b.right) / (z * tx), y = dot(d, b.up) / (z * ty);
    const W = this.overlay.width, H = this.overlay.height;
    return [(x + 1) * W / 2, (1 - y) * H / 2];
  }

  _polyline(ctx, points, b, tx, ty, closed, fill) {
    let open = false, complete = true;
    const pts = closed ? points.concat([points[0]]) : points;
    ctx.beginPath();
    for (const [lon, lat] of pts) {
      const p = this.project(lon, lat, b, tx, ty);
      if (!p) { open = false; complete = false; continue; }
      if (open) ctx.lineTo(p[0], p[1]); else ctx.moveTo(p[0], p[1]);
      open = true;
    }
    if (fill && complete) ctx.fill();
    ctx.stroke();
  }

  _drawOverlay(b, tx, ty) {
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    const g = this.geometry;
    if (!g || !this.loaded) return;
    const dpr = window.devicePixelRatio || 1;
    if (this.showTiles) {
      ctx.lineWidth = 2 * dpr;
      ctx.font = `${13 * dpr}px system-ui, sans-serif`;
      for (const v of g.views) {
        if (v.is_global || !v.outline.length) continue;
        const colour = tileColour(v.index);
        ctx.strokeStyle = colour;
        this._polyline(ctx, v.outline, b, tx, ty, true);
        const c = this.project(v.yaw, v.pitch, b, tx, ty);
        if (c) {
          ctx.fillStyle = colour;
          ctx.fillText(`tile ${v.index}`, c[0] + 4 * dpr, c[1] - 4 * dpr);
          ctx.beginPath();
          ctx.arc(c[0], c[1], 3 * dpr, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    }
    if (this.showPatches) {
      ctx.lineWidth = 1.2 * dpr;
      const total = g.matches.reduce((n, m) => n + m.patches.length, 0) || 1;
      let k = 0;
      for (const m of g.matches) {
        for (const p of m.patches) {
          const hue = Math.round(360 * (k++) / total);
          ctx.strokeStyle = `hsl(${hue} 95% 55%)`;
          ctx.fillStyle = `hsl(${hue} 95% 55% / 0.1)`;
          ctx.setLineDash([]);
          this._polyline(ctx, p.src_cell, b, tx, ty, true, true);
          ctx.setLineDash([4 * dpr, 3 * dpr]);
          this._polyline(ctx, p.dst_cell, b, tx, ty, true);
          ctx.setLineDash([]);
          const c = this.project(p.centre[0], p.centre[1], b, tx, ty);
          if (c) {
            ctx.fillStyle = `hsl(${hue} 95% 55%)`;
            ctx.beginPath();
            ctx.arc(c[0], c[1], 2.5 * dpr, 0, 2 * Math.PI);
            ctx.fill();
          }
        }
      }
    }
  }
}

// matplotlib's tab10, the colours `cora-kit tile` gives view i
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
function tileColour(i) { return TAB10[i % 10]; }

window.PanoViewer = PanoViewer;
