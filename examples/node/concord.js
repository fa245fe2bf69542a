// A minimal Concord client in Node.js, written from docs/protocol.md alone:
// one DEALER socket, msgpack maps, replies matched by id, exactly-once writes with
// (client_id, seq, min_seq) resent unchanged after silence, and the PUB change stream.
import { randomBytes } from "node:crypto";
import { Dealer, Subscriber } from "zeromq";
import { encode, decode } from "@msgpack/msgpack";

export class ConcordError extends Error {
  constructor(reply) {
    super(`${reply.error}: ${reply.message}`);
    this.code = reply.error;
    this.reply = reply;
  }
}

export class Client {
  constructor(endpoint, { attemptMs = 2000, attempts = 5 } = {}) {
    this.sock = new Dealer({ linger: 0 });
    this.sock.connect(endpoint);
    this.attemptMs = attemptMs;
    this.attempts = attempts;
    this.nextId = Math.floor(Math.random() * 1e9);
    this.pending = new Map(); // id -> resolve
    this.unmatched = []; // resolvers waiting for a nil-id reply (send_raw)
    this.clientId = randomBytes(8).toString("hex");
    this.seq = 0;
    this.inflight = new Set(); // seqs of writes still waiting for their reply
    this.reader = this.#read();
  }

  async #read() {
    try {
      for await (const frames of this.sock) {
        const reply = decode(frames[frames.length - 1]);
        if (reply.id === null || reply.id === undefined) {
          const waiter = this.unmatched.shift(); // docs/protocol.md "Request ids"
          if (waiter) waiter(reply);
          continue;
        }
        const resolve = this.pending.get(reply.id);
        if (resolve) {
          this.pending.delete(reply.id);
          resolve(reply);
        } // else: the late answer to an attempt we gave up on
      }
    } catch {
      // the socket was closed
    }
  }

  #wait(id, ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.pending.delete(id); resolve(null); }, ms);
      this.pending.set(id, (reply) => { clearTimeout(timer); resolve(reply); });
    });
  }

  // One attempt: the reply map, or null after attemptMs of silence.
  async send(msg) {
    const id = msg.id ?? this.nextId++;
    const waiting = this.#wait(id, this.attemptMs);
    await this.sock.send([Buffer.alloc(0), encode({ ...msg, id })]);
    return waiting;
  }

  // Raw bytes whose reply may carry a nil id (a malformed request).
  async sendRaw(payload) {
    const reply = new Promise((resolve) => this.unmatched.push(resolve));
    await this.sock.send([Buffer.alloc(0), payload]);
    return reply;
  }

  // A read: resent freely; not_leader / no_leader are retried after a pause.
  async read(op, args) {
    for (let i = 0; i < this.attempts; i++) {
      const reply = await this.send({ op, ...args, id: this.nextId++ });
      if (reply === null || reply.error === "no_leader") { await pause(100); continue; }
      if (!reply.ok) throw new ConcordError(reply);
      return reply;
    }
    throw new Error(`${op}: no answer after ${this.attempts} attempts`);
  }

  // A write: one seq for all attempts; min_seq = the lowest seq still in flight.
  async write(op, args) {
    const seq = ++this.seq;
    this.inflight.add(seq);
    try {
      for (let i = 0; i < this.attempts; i++) {
        const minSeq = Math.min(...this.inflight);
        const reply = await this.send({ op, ...args, id: this.nextId++,
                                         client_id: this.clientId, seq, min_seq: minSeq });
        if (reply === null || reply.error === "no_leader" || reply.error === "timeout") {
          await pause(100); // maybe applied: resend the same (client_id, seq)
          continue;
        }
        if (!reply.ok) throw new ConcordError(reply);
        return reply;
      }
      throw new Error(`${op}: outcome unknown after ${this.attempts} attempts`);
    } finally {
      this.inflight.delete(seq);
    }
  }

  async get(key, consistency = "leader") { return (await this.read("get", { key, consistency })).value; }
  async put(key, value, ttl) { return (await this.write("put", ttl ? { key, value, ttl } : { key, value })).revision; }
  async putIf(key, value, condition) { return (await this.write("put_if", { key, value, ...condition })).revision; }
  async delete(key) { return (await this.write("delete", { key })).deleted; }
  async incr(key, delta = 1) { return (await this.write("incr", { key, delta })).value; }

  close() { this.sock.close(); }
}

// The change stream: calls onEvent(event) for every put/delete/expire/touch under prefix.
export async function subscribe(eventsEndpoint, prefix, onEvent, signal) {
  const sub = new Subscriber({ linger: 0 });
  sub.connect(eventsEndpoint);
  sub.subscribe(prefix);
  signal?.addEventListener("abort", () => sub.close());
  try {
    for await (const [, payload] of sub) {
      const event = decode(payload);
      if (event.type !== "sync") onEvent(event);
    }
  } catch {
    // closed
  }
}

export function pause(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
