// Replays tests/conformance/transcripts (rules: tests/conformance/README.md) against the
// node at $CONCORD_ENDPOINT. Exit 0 and "<n> transcripts passed", or exit 1 naming the step.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { encode } from "@msgpack/msgpack";
import { Client } from "./concord.js";

const dir = process.argv[2] ?? "../../tests/conformance/transcripts";
const endpoint = process.env.CONCORD_ENDPOINT ?? "tcp://127.0.0.1:7400";

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);

function build(value, prefix, saved) {
  if (typeof value === "string") return value.replaceAll("{p}", prefix);
  if (Array.isArray(value)) return value.map((v) => build(v, prefix, saved));
  if (isMap(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin") return Uint8Array.from(Buffer.from(value.$bin, "hex"));
    if (keys.length === 1 && keys[0] === "$ref") return saved[value.$ref];
    return Object.fromEntries(keys.map((k) => [build(k, prefix, saved), build(value[k], prefix, saved)]));
  }
  return value;
}

const CHECKS = {
  $int: (v) => Number.isInteger(v),
  $number: (v) => typeof v === "number",
  $str: (v) => typeof v === "string",
  $any: () => true,
};

function match(expected, actual, prefix, saved, path) {
  if (typeof expected === "string" && expected.startsWith("$")) {
    if (!CHECKS[expected] || !CHECKS[expected](actual)) throw new Error(`${path}: ${JSON.stringify(actual)} is not ${expected}`);
    return;
  }
  if (isMap(expected) && Object.keys(expected).length === 1) {
    const [tag] = Object.keys(expected);
    if (tag === "$capture") { saved[expected.$capture] = actual; return; }
    if (tag === "$contains") {
      if (typeof actual !== "string" || !actual.includes(expected.$contains)) throw new Error(`${path}: ${JSON.stringify(actual)} does not contain ${expected.$contains}`);
      return;
    }
    if (tag === "$ref" || tag === "$bin") expected = build(expected, prefix, saved);
  }
  if (expected instanceof Uint8Array) {
    if (!(actual instanceof Uint8Array) || Buffer.compare(Buffer.from(expected), Buffer.from(actual)) !== 0) throw new Error(`${path}: bytes differ`);
    return;
  }
  if (isMap(expected)) {
    if (!isMap(actual)) throw new Error(`${path}: ${JSON.stringify(actual)} is not a map`);
    const wanted = Object.fromEntries(Object.entries(expected).map(([k, v]) => [build(k, prefix, saved), v]));
    const a = Object.keys(actual).sort().join(","), w = Object.keys(wanted).sort().join(",");
    if (a !== w) throw new Error(`${path}: keys ${a} != ${w}`);
    for (const [k, v] of Object.entries(wanted)) match(v, actual[k], prefix, saved, `${path}.${k}`);
    return;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) throw new Error(`${path}: ${JSON.stringify(actual)} is not a list of ${expected.length}`);
    expected.forEach((e, i) => match(e, actual[i], prefix, saved, `${path}[${i}]`));
    return;
  }
  const built = build(expected, prefix, saved);
  if (built !== actual) throw new Error(`${path}: ${JSON.stringify(actual)} != ${JSON.stringify(built)}`);
}

async function replay(client, transcript) {
  const prefix = `conf-${randomBytes(4).toString("hex")}/`;
  const saved = {};
  for (const [n, step] of transcript.steps.entries()) {
    const reply = "send_raw_hex" in step
      ? await client.sendRaw(Buffer.from(step.send_raw_hex, "hex"))
      : "id" in step.send
        ? await client.send(build(step.send, prefix, saved))
        : await client.sendRaw(encode(build(step.send, prefix, saved)));
    if (reply === null) throw new Error(`${transcript.name} step ${n + 1}: no reply`);
    try {
      for (const [key, sub] of Object.entries(step.expect)) {
        if (!(key in reply)) throw new Error(`reply lacks field ${key}: ${JSON.stringify(reply)}`);
        match(sub, reply[key], prefix, saved, key);
      }
    } catch (err) {
      throw new Error(`${transcript.name} step ${n + 1}: ${err.message}`);
    }
  }
  return transcript.steps.length;
}

const client = new Client(endpoint, { attemptMs: 10000 });
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
let steps = 0;
try {
  for (const file of files) steps += await replay(client, JSON.parse(readFileSync(join(dir, file), "utf8")));
  console.log(`${files.length} transcripts passed (${steps} steps)`);
} catch (err) {
  console.log(`FAIL ${err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
