// rtseg review page: three orthogonal views of a CT with organ contours, drawn on 2D canvases.
// Data come from the JSON block #rtseg-data (see rtseg/review/page.py); nothing is fetched.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("rtseg-data").textContent);
  const PRESETS = { soft: [40, 400], bone: [400, 1800], lung: [-600, 1500] };
  const VIEWS = ["axial", "coronal", "sagittal"];
  const S = { window: PRESETS.soft.slice(), opacity: 0.5, style: "fill", visible: {}, slice: {}, ready: false };
  let ct = null, labels = null, gt = null;

  async function inflate(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  // Inverse of encode.pack_deltas: low/high byte planes -> zigzag deltas -> running sum.
  async function unpack(rec) {
    const planes = await inflate(rec.data);
    const n = rec.shape[0] * rec.shape[1] * rec.shape[2];
    const out = new Int32Array(n);
    let acc = 0;
    const two = rec.planes === 2;
    for (let i = 0; i < n; i++) {
      const z = two ? planes[i] | (planes[n + i] << 8) : planes[i];
      acc += (z >>> 1) ^ -(z & 1);
      out[i] = acc;
    }
    return out;
  }
  async function decodeCT(rec) {
    const codes = await unpack(rec);
    const hu = new Int16Array(codes.length);
    const lut = rec.lut;
    for (let i = 0; i < codes.length; i++) hu[i] = lut[codes[i]];
    return hu;
  }

  const [NX, NY, NZ] = D.labels.shape;
  const [CX, CY] = D.ct.shape;
  const F = D.ct.factor;
  // Display geometry of each view: columns/rows and the voxel index of display pixel (r, c) on slice s.
  const GEOM = {
    axial: { cols: NX, rows: NY, n: NZ, sc: D.spacing[0], sr: D.spacing[1], ijk: (r, c, s) => [NX - 1 - c, NY - 1 - r, s] },
    coronal: { cols: NX, rows: NZ, n: NY, sc: D.spacing[0], sr: D.spacing[2], ijk: (r, c, s) => [NX - 1 - c, s, NZ - 1 - r] },
    sagittal: { cols: NY, rows: NZ, n: NX, sc: D.spacing[1], sr: D.spacing[2], ijk: (r, c, s) => [s, NY - 1 - c, NZ - 1 - r] },
  };

  function sliceLabels(vol, view, s) {
    const g = GEOM[view], out = new Uint8Array(g.rows * g.cols);
    for (let r = 0; r < g.rows; r++) for (let c = 0; c < g.cols; c++) {
      const [i, j, k] = g.ijk(r, c, s);
      out[r * g.cols + c] = vol[i + NX * (j + NY * k)];
    }
    return out;
  }
  function draw(canvas, view, vol) {
    const g = GEOM[view], s = S.slice[view];
    const img = canvas.getContext("2d").createImageData(g.cols, g.rows);
    const lab = sliceLabels(vol, view, s);
    const lo = S.window[0] - S.window[1] / 2, width = S.window[1], a = S.opacity;
    for (let r = 0; r < g.rows; r++) for (let c = 0; c < g.cols; c++) {
      const [i, j, k] = g.ijk(r, c, s);
      const hu = ct[Math.floor(i / F) + CX * (Math.floor(j / F) + CY * k)];
      let v = Math.round(((hu - lo) / width) * 255);
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      const p = r * g.cols + c, o = 4 * p, l = lab[p];
      let R = v, G = v, B = v;
      if (l > 0 && S.visible[l]) {
        const edge = S.style === "fill" || (c === 0 || lab[p - 1] !== l || c === g.cols - 1 || lab[p + 1] !== l ||
          r === 0 || lab[p - g.cols] !== l || r === g.rows - 1 || lab[p + g.cols] !== l);
        if (edge) {
          const col = D.colors[l - 1];
          R = Math.round((1 - a) * v + a * col[0]); G = Math.round((1 - a) * v + a * col[1]); B = Math.round((1 - a) * v + a * col[2]);
        }
      }
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
    canvas.getContext("2d").putImageData(img, 0, 0);
  }
  function render() {
    for (const view of VIEWS) {
      draw(document.getElementById("view-pred-" + view), view, labels);
      if (gt) draw(document.getElementById("view-gt-" + view), view, gt);
      document.getElementById("pos-" + view).textContent = (S.slice[view] + 1) + " / " + GEOM[view].n;
    }
    document.getElementById("wl").textContent = "L " + S.window[0] + " W " + S.window[1];
  }

  function setupCanvases() {
    // one scale for all views, so millimetres look the same everywhere
    const mm = Math.max(...VIEWS.map((v) => GEOM[v].cols * GEOM[v].sc));
    const scale = Math.min(420, Math.max(240, mm)) / mm;
    for (const view of VIEWS) {
      const g = GEOM[view];
      for (const kind of gt ? ["pred", "gt"] : ["pred"]) {
        const cv = document.getElementById("view-" + kind + "-" + view);
        cv.width = g.cols; cv.height = g.rows;
        cv.style.width = (g.cols * g.sc * scale).toFixed(1) + "px";
        cv.style.height = (g.rows * g.sr * scale).toFixed(1) + "px";
      }
      const slider = document.getElementById("slider-" + view);
      slider.max = g.n - 1;
      slider.value = S.slice[view] = D.start[view];
      slider.addEventListener("input", () => { S.slice[view] = Number(slider.value); render(); });
    }
  }
  // Click a view: the other two views jump to that point. Wheel over a view: previous/next slice.
  function setSlice(view, value) {
    const slider = document.getElementById("slider-" + view);
    S.slice[view] = Math.max(0, Math.min(GEOM[view].n - 1, value));
    slider.value = S.slice[view];
  }
  function setupNavigation() {
    const axisOf = { sagittal: 0, coronal: 1, axial: 2 };
    for (const view of VIEWS) for (const kind of gt ? ["pred", "gt"] : ["pred"]) {
      const cv = document.getElementById("view-" + kind + "-" + view);
      cv.addEventListener("click", (ev) => {
        const box = cv.getBoundingClientRect(), g = GEOM[view];
        const c = Math.floor(((ev.clientX - box.left) / box.width) * g.cols), r = Math.floor(((ev.clientY - box.top) / box.height) * g.rows);
        const ijk = g.ijk(r, c, S.slice[view]);
        for (const other of VIEWS) if (other !== view) setSlice(other, ijk[axisOf[other]]);
        render();
      });
      cv.addEventListener("wheel", (ev) => { ev.preventDefault(); setSlice(view, S.slice[view] + (ev.deltaY > 0 ? -1 : 1)); render(); });
    }
    // Click an organ's name in the QA table: all three views go through its centre.
    for (const [label, ijk] of Object.entries(D.centres)) {
      const link = document.getElementById("goto-" + label);
      if (link) link.addEventListener("click", (ev) => {
        ev.preventDefault();
        for (const view of VIEWS) setSlice(view, ijk[axisOf[view]]);
        render();
      });
    }
  }
  function setupControls() {
    for (const [name, wl] of Object.entries(PRESETS))
      document.getElementById("preset-" + name).addEventListener("click", () => { S.window = wl.slice(); render(); });
    const op = document.getElementById("opacity");
    op.addEventListener("input", () => { S.opacity = Number(op.value); render(); });
    const st = document.getElementById("style");
    st.addEventListener("change", () => { S.style = st.value; render(); });
    for (let l = 1; l < D.class_names.length; l++) {
      S.visible[l] = true;
      const box = document.getElementById("toggle-" + l);
      if (box) box.addEventListener("change", () => { S.visible[l] = box.checked; render(); });
    }
  }
  async function main() {
    try {
      [ct, labels, gt] = await Promise.all([decodeCT(D.ct), unpack(D.labels), D.gt ? unpack(D.gt) : null]);
      setupCanvases();
      setupControls();
      setupNavigation();
      render();
      S.ready = true;
      document.body.dataset.ready = "1";
    } catch (err) {
      document.getElementById("status").textContent = "This page could not decode its images: " + err;
      throw err;
    }
  }
  window.rtsegReview = { state: S, render: render, geometry: GEOM };
  main();
})();
