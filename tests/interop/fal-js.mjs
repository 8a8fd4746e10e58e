// Drives fal's own JS client (@fal-ai/client, unchanged) against
// `fluxi2i simulate`: the only change is a fetch that sends the traffic for
// https://queue.fal.run to the simulator. Exits non-zero on any mismatch.
import { createFalClient } from "@fal-ai/client";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const base = process.env.SIM;
const image = "data:image/png;base64," + readFileSync(process.env.IMG).toString("base64");
const fal = createFalClient({
  credentials: process.env.KEY,
  fetch: (url, init) => fetch(String(url).replace("https://queue.fal.run", base), init),
});

const model = "fal-ai/flux-1/dev/image-to-image";
const input = { image_url: image, prompt: "a wizard", num_images: 2, output_format: "png", seed: 7 };

// subscribe: submit, poll with logs, result.
const statuses = new Set();
let logs = 0;
const result = await fal.subscribe(model, {
  input,
  logs: true,
  onQueueUpdate: (u) => {
    statuses.add(u.status);
    logs = Math.max(logs, (u.logs ?? []).length);
  },
});
assert.match(result.requestId, /^[0-9a-f-]{36}$/);
assert.equal(result.data.images.length, 2);
for (const im of result.data.images) {
  assert.equal(im.content_type, "image/png");
  assert.equal(im.width, 128);
  assert.equal(im.height, 96);
}
assert.equal(result.data.seed, 7);
assert.ok(statuses.has("COMPLETED"));
assert.ok(logs > 0, "log lines arrive");

// The queue API piece by piece, status stream included.
const { request_id } = await fal.queue.submit(model, { input });
const stream = await fal.queue.streamStatus(model, { requestId: request_id, logs: true });
const seen = [];
stream.on("data", (s) => seen.push(s.status));
const done = await stream.done();
assert.equal(done.status, "COMPLETED");
assert.ok(seen.includes("COMPLETED"));
const again = await fal.queue.result(model, { requestId: request_id });
assert.equal(again.data.images.length, 2);

// Cancel.
const { request_id: doomed } = await fal.queue.submit(model, { input });
await fal.queue.cancel(model, { requestId: doomed });

console.log(JSON.stringify({ ok: true, statuses: [...statuses], streamed: seen, requestId: result.requestId }));
