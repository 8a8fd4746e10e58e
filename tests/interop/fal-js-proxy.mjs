// Drives fal's own JS client (@fal-ai/client, unchanged) through
// `fluxi2i proxy`, configured as a browser app would be: proxyUrl, no
// credentials (in Node the client proxies only with when: "always").
// Exits non-zero on any mismatch.
import { createFalClient } from "@fal-ai/client";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const proxyUrl = process.env.PROXY + "/api/fal/proxy";
const image = "data:image/png;base64," + readFileSync(process.env.IMG).toString("base64");
const fal = createFalClient({ proxyUrl: { url: proxyUrl, when: "always" } });
const model = "fal-ai/flux-1/dev/image-to-image";
const input = { image_url: image, prompt: "a wizard", num_images: 2, output_format: "png", seed: 7 };
const rounds = Number(process.env.ROUNDS ?? 1);

for (let round = 0; round < rounds; round++) {
  // subscribe, polling (the default) and streaming.
  for (const mode of ["polling", "streaming"]) {
    const statuses = new Set();
    const result = await fal.subscribe(model, {
      input, logs: true, mode,
      onQueueUpdate: (u) => statuses.add(u.status),
    });
    assert.match(result.requestId, /^[0-9a-f-]{36}$/);
    assert.equal(result.data.images.length, 2, mode);
    assert.equal(result.data.seed, 7);
    assert.ok(statuses.has("COMPLETED"), mode);
  }

  // The status stream, the result and a cancel, piece by piece.
  const { request_id } = await fal.queue.submit(model, { input });
  const stream = await fal.queue.streamStatus(model, { requestId: request_id, logs: true });
  const seen = [];
  stream.on("data", (s) => seen.push(s.status));
  const done = await stream.done();
  assert.equal(done.status, "COMPLETED");
  assert.ok(seen.length >= 2, "events arrive one by one: " + seen);
  const again = await fal.queue.result(model, { requestId: request_id });
  assert.equal(again.data.images.length, 2);
  const { request_id: doomed } = await fal.queue.submit(model, { input });
  await fal.queue.cancel(model, { requestId: doomed });
}

// Refused: another model (403), a target on another host (412), no target (400).
await assert.rejects(fal.queue.submit("fal-ai/flux-pro/v1.1-ultra", { input: { prompt: "p" } }), (e) => e.status === 403);
const raw = (target) => fetch(proxyUrl, { method: "POST", headers: { "content-type": "application/json", ...(target ? { "x-fal-target-url": target } : {}) }, body: JSON.stringify(input) });
assert.equal((await raw("https://evil.example.com/fal-ai/flux-1/dev/image-to-image")).status, 412);
assert.equal((await raw("")).status, 400);
// Refused before anything is paid for: an input the spec does not allow.
await assert.rejects(fal.queue.submit(model, { input: { ...input, strength: 2 } }), (e) => e.status === 422);

console.log(JSON.stringify({ ok: true, through: proxyUrl, rounds }));
