// Test doubles for what node cannot provide without a network peer: a WebSocket whose server side
// the test plays by hand, and a clock whose timers fire only when the test advances it.

export class FakeSocket {
  static instances = [];
  static get last() { return FakeSocket.instances.at(-1); }
  static reset() { FakeSocket.instances = []; }

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.binaryType = 'blob';
    this.sentText = [];
    this.sentBinary = [];
    this.closedByClient = false;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.instances.push(this);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    if (typeof data === 'string') this.sentText.push(data);
    else this.sentBinary.push(new Uint8Array(data));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.closedByClient = true;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  // server side
  open() { this.readyState = 1; this.onopen?.({}); }
  receive(msg) { this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) }); }
  serverClose(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
}

export class FakeClock {
  constructor() { this.now = 0; this.timers = new Map(); this.nextId = 1; }
  setTimeout(fn, ms) { const id = this.nextId++; this.timers.set(id, { at: this.now + ms, fn }); return id; }
  clearTimeout(id) { this.timers.delete(id); }
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
}
