// get / put / CAS / subscribe against $CONCORD_ENDPOINT (and $CONCORD_EVENTS for the stream).
import { randomBytes } from "node:crypto";
import { Client, ConcordError, pause, subscribe } from "./concord.js";

const endpoint = process.env.CONCORD_ENDPOINT ?? "tcp://127.0.0.1:7400";
const events = process.env.CONCORD_EVENTS ?? "tcp://127.0.0.1:7600";
const prefix = `demo-${randomBytes(4).toString("hex")}/`;
const client = new Client(endpoint);
const stop = new AbortController();
const seen = [];
const streaming = subscribe(events, prefix, (event) => seen.push(event), stop.signal);
try {
  await client.put(`${prefix}flag`, true);
  console.log("get", await client.get(`${prefix}flag`, "strong"));
  await client.putIf(`${prefix}owner`, "node-a", { absent: true });
  try {
    await client.putIf(`${prefix}owner`, "node-b", { absent: true });
    throw new Error("the second put_if absent must fail");
  } catch (err) {
    if (!(err instanceof ConcordError) || err.code !== "condition_failed") throw err;
    console.log("cas refused:", err.code);
  }
  console.log("incr", await client.incr(`${prefix}hits`), await client.incr(`${prefix}hits`, 5));
  await client.delete(`${prefix}flag`);
  // The subscription may miss changes made before it connected (PUB/SUB slow joiner):
  // write until one arrives, then check a delete event has no value key.
  for (let i = 0; i < 100 && !seen.some((e) => e.type === "delete"); i++) {
    await client.put(`${prefix}tick`, i);
    await client.delete(`${prefix}tick`);
    await pause(50);
  }
  const del = seen.find((e) => e.type === "delete");
  if (!del || "value" in del) throw new Error(`no delete event without value: ${JSON.stringify(seen)}`);
  console.log("events", seen.length, "first", seen[0].type, seen[0].key);
  console.log("demo ok");
} finally {
  stop.abort();
  await streaming;
  client.close();
}
