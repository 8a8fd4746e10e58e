// The page's side of the e2e test: fal's own JS client, configured as a
// web app configures it (proxyUrl, no credentials), one function per case
// on window.e2e. Each returns plain data for the driver (run.mjs) to
// assert; failures are returned, not thrown, so the driver can tell an
// expected failure from a real one.
import { createFalClient } from "@fal-ai/client";

const model = "fal-ai/flux-1/dev/image-to-image";
let fal;

function log(line) {
  document.getElementById("log").textContent += line + "\n";
}

// The input image: a small gradient drawn on a canvas.
function inputCanvas() {
  const c = document.getElementById("input");
  const ctx = c.getContext("2d");
  const g = ctx.createLinearGradient(0, 0, c.width, c.height);
  g.addColorStop(0, "#d33");
  g.addColorStop(1, "#33d");
  ctx.fillStyle = g;
  ctx.fillRect(0, 0, c.width, c.height);
  return c;
}

const input = (extra = {}) => ({
  image_url: inputCanvas().toDataURL("image/png"),
  prompt: "a wizard",
  seed: 7,
  ...extra,
});

// refusal is what the page can read of a refused call.
function refusal(e) {
  return { failed: true, name: e?.name, status: e?.status, body: e?.body ?? null, message: String(e?.message ?? e) };
}

async function subscribe(mode, extra) {
  const statuses = [];
  let enqueued = "";
  try {
    const r = await fal.subscribe(model, {
      input: input(extra), mode, logs: true, pollInterval: 100,
      onEnqueue: (id) => { enqueued = id; },
      onQueueUpdate: (u) => statuses.push(u.status),
    });
    log(`${mode}: request ${JSON.stringify(r.requestId)}, ${r.data.images.length} image(s)`);
    return { requestId: r.requestId, enqueued, statuses, images: r.data.images.map((i) => i.url), seed: r.data.seed };
  } catch (e) {
    return refusal(e);
  }
}

// draw loads url with fetch(), draws it on a canvas and reads it back (a
// tainted canvas would throw).
async function draw(url, canvasId) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`fetch answered ${resp.status}`);
  const bitmap = await createImageBitmap(await resp.blob());
  const c = document.getElementById(canvasId);
  c.width = bitmap.width;
  c.height = bitmap.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 0) lit++;
  return { width: bitmap.width, height: bitmap.height, litPixels: lit, dataURL: c.toDataURL("image/png").length };
}

window.e2e = {
  configure(proxyUrl) {
    fal = createFalClient({ proxyUrl });
    document.getElementById("proxy").textContent = proxyUrl;
    return true;
  },
  polling: () => subscribe("polling"),
  streaming: () => subscribe("streaming"),
  async syncMode() {
    const r = await subscribe("polling", { sync_mode: true });
    if (r.failed) return r;
    try {
      r.drawn = await draw(r.images[0], "sync");
    } catch (e) {
      r.drawError = String(e);
    }
    r.images = r.images.map((u) => u.slice(0, 30)); // data URIs: the head is enough
    return r;
  },
  async fetchCanvas() {
    const r = await subscribe("polling");
    if (r.failed) return r;
    try {
      r.drawn = await draw(r.images[0], "output");
    } catch (e) {
      r.drawError = String(e);
    }
    return r;
  },
  async imgTag() {
    const r = await subscribe("polling");
    if (r.failed) return r;
    const img = document.getElementById("result");
    try {
      await new Promise((ok, fail) => {
        img.onload = ok;
        img.onerror = () => fail(new Error("the image did not load"));
        img.src = r.images[0];
      });
    } catch (e) {
      return refusal(e);
    }
    return { naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight };
  },
  async otherModel() {
    try {
      await fal.queue.submit("fal-ai/flux-pro/v1.1-ultra", { input: { prompt: "p" } });
      return { failed: false };
    } catch (e) {
      return refusal(e);
    }
  },
  async invalidInput() {
    try {
      await fal.queue.submit(model, { input: input({ strength: 2 }) });
      return { failed: false };
    } catch (e) {
      return refusal(e);
    }
  },
  async webhookUrl() {
    try {
      await fal.queue.submit(model, { input: input(), webhookUrl: "https://hooks.example.com/fal" });
      return { failed: false };
    } catch (e) {
      return refusal(e);
    }
  },
  async blobInput() {
    const blob = await new Promise((ok) => inputCanvas().toBlob(ok, "image/png"));
    try {
      const r = await fal.subscribe(model, { input: { image_url: blob, prompt: "a wizard", seed: 7 }, pollInterval: 100 });
      return { requestId: r.requestId, images: r.data.images.map((i) => i.url) };
    } catch (e) {
      return refusal(e);
    }
  },
};
window.e2eReady = true;
log("ready");
