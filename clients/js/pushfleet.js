/*
 * pushfleet.js: a small, dependency-free browser client for pushfleet edges.
 *
 *   <script src="pushfleet.js"></script>
 *   const client = new Pushfleet.Client();          // ws(s)://<this host>/ws
 *   client.on("message", (m) => console.log(m.channel, m.seq, m.data));
 *   client.subscribe("ticker_INR");
 *
 * The protocol (JSON text frames) is described in docs/PROTOCOL.md. This file keeps
 * the channels a page holds across reconnects, reconnects with jittered exponential
 * backoff, honours the edge's drain hint, and watches sequence numbers so the page
 * knows when it missed messages. Compression is the browser's own permessage-deflate.
 */
(function (root) {
  "use strict";

  var DEFAULTS = {
    minDelayMs: 250, // first backoff ceiling; also the jitter added to a drain hint
    maxDelayMs: 10000, // backoff never waits longer than this
    infoEveryMs: 2000, // re-ask the edge for its info (0: only once per connection)
    connectTimeoutMs: 10000, // a socket not open by then is abandoned and retried
    // With info requests going out every infoEveryMs, an edge that answers nothing
    // for this long is presumed gone (a dead host sends no close): drop and retry.
    idleTimeoutMs: 10000,
  };

  // ws://host/ws for a page served over http, wss:// for https; "/path" is taken
  // relative to the page's host.
  function resolveUrl(url) {
    var loc = typeof location !== "undefined" ? location : null;
    if (url && !/^\//.test(url)) return url;
    if (!loc) throw new Error("Pushfleet.Client: a ws:// URL is needed outside a page");
    var scheme = loc.protocol === "https:" ? "wss://" : "ws://";
    return scheme + loc.host + (url || "/ws");
  }

  function Client(url, options) {
    options = options || {};
    this.url = resolveUrl(url);
    this.options = {};
    for (var key in DEFAULTS) {
      this.options[key] = options[key] !== undefined ? options[key] : DEFAULTS[key];
    }
    // channel -> {lastSeq: number|null, stale: bool}; survives reconnects.
    this.channels = new Map();
    this.listeners = {};
    this.ws = null;
    this.connected = false;
    this.edge = null; // the edge id, from the latest info reply on this socket
    this.extensions = ""; // the socket's negotiated extensions (permessage-deflate)
    this.lastInfo = null;
    this.messagesReceived = 0;
    this.reconnects = 0; // successful opens after the first one
    this.gaps = 0;
    this.attempt = 0; // failed attempts since the last successful open
    this.everOpened = false;
    this.stopped = false;
    this.drainHint = null; // retry_after_ms from the edge's reconnect message
    this.timers = {};
    this.connect();
  }

  // --- events: a tiny emitter, so the client also works where EventTarget is odd ---

  Client.prototype.on = function (name, fn) {
    (this.listeners[name] = this.listeners[name] || []).push(fn);
    return this;
  };

  Client.prototype.off = function (name, fn) {
    var list = this.listeners[name] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  Client.prototype.emit = function (name, detail) {
    var list = (this.listeners[name] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(this, detail);
      } catch (e) {
        // A broken page handler must not break the connection: report it later.
        setTimeout(function () { throw e; }, 0);
      }
    }
  };

  // --- channels ---

  Client.prototype.subscribe = function (channel) {
    if (this.channels.has(channel)) return this;
    this.channels.set(channel, { lastSeq: null, stale: true });
    this.send({ method: "subscribe", channel: channel });
    return this;
  };

  Client.prototype.unsubscribe = function (channel) {
    if (!this.channels.delete(channel)) return this;
    this.send({ method: "unsubscribe", channel: channel });
    return this;
  };

  // Sends a request if the socket is open; otherwise the open handler catches up.
  Client.prototype.send = function (request) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(request));
    return true;
  };

  // --- the connection ---

  Client.prototype.connect = function () {
    var self = this;
    if (this.stopped) return;
    var ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      // A malformed URL will never work: say so (once the page had a chance to
      // listen: this runs inside the constructor) and stop.
      this.stopped = true;
      setTimeout(function () { self.emit("error", { error: "bad_url", message: String(e) }); }, 0);
      return;
    }
    this.ws = ws;
    this.timers.connect = setTimeout(function () {
      self.drop(4000, "connect timeout");
    }, this.options.connectTimeoutMs);
    ws.onopen = function () { self.onOpen(); };
    ws.onmessage = function (ev) { self.onFrame(ev.data); };
    // An error is always followed by a close; the close handler does the retry.
    ws.onerror = function () {};
    ws.onclose = function (ev) { self.onClose(ev.code, ev.reason); };
  };

  Client.prototype.onOpen = function () {
    var self = this;
    clearTimeout(this.timers.connect);
    this.connected = true;
    this.attempt = 0; // a successful open resets the backoff
    this.drainHint = null;
    if (this.everOpened) this.reconnects++;
    this.everOpened = true;
    this.edge = null; // this may be another edge: known once info answers
    this.extensions = this.ws.extensions || "";
    this.lastHeard = Date.now();
    // Resubscribe to everything held, then ask which edge this is.
    this.channels.forEach(function (_, channel) {
      self.send({ method: "subscribe", channel: channel });
    });
    this.requestInfo();
    this.timers.info = setInterval(function () { self.tick(); }, this.options.infoEveryMs || 1000);
    this.emit("open", { edge: null, extensions: this.extensions, url: this.url });
  };

  Client.prototype.requestInfo = function () {
    this.send({ method: "info", id: "info" });
  };

  // Periodic: refresh info (the page shows the compression ratio live) and notice
  // an edge that went silent without closing.
  Client.prototype.tick = function () {
    if (!this.connected) return;
    if (this.options.infoEveryMs > 0) {
      this.requestInfo();
      var idle = this.options.idleTimeoutMs;
      if (idle > 0 && Date.now() - this.lastHeard > idle) this.drop(4001, "edge silent");
    }
  };

  Client.prototype.onFrame = function (text) {
    var msg;
    this.lastHeard = Date.now();
    try {
      msg = JSON.parse(text);
    } catch (e) {
      this.emit("error", { error: "client_invalid_json", message: String(e) });
      return;
    }
    if (msg.type === undefined) return this.onPublished(msg);
    switch (msg.type) {
      case "info":
        this.edge = msg.edge;
        this.lastInfo = msg;
        this.emit("info", msg);
        break;
      case "reconnect":
        // The edge is draining: it closes with 1012 next. Wait as long as it asks,
        // so a fleet's clients arrive at the other edges spread out, not at once.
        this.drainHint = Math.max(0, Number(msg.retry_after_ms) || 0);
        this.emit("drain", { reason: msg.reason, retryAfterMs: this.drainHint });
        break;
      case "error":
        this.emit("error", msg);
        break;
      default: // subscribed, unsubscribed, and whatever newer edges add
        this.emit(msg.type, msg);
    }
  };

  // A published message: check its sequence number against the channel's last one.
  Client.prototype.onPublished = function (msg) {
    var state = this.channels.get(msg.channel);
    if (!state) return; // a message in flight when we unsubscribed
    this.messagesReceived++;
    var message = {
      channel: msg.channel,
      event: msg.event,
      data: msg.data,
      seq: msg.seq,
      snapshot: msg.snapshot === true,
    };
    if (message.snapshot) {
      // The channel's latest value: it replaces whatever we had, gap or not.
      state.lastSeq = msg.seq;
      state.stale = false;
      this.emit("snapshot", message);
    } else {
      if (state.lastSeq !== null && msg.seq !== state.lastSeq + 1) {
        // Missed messages (a slow-client drop, a reconnect) or a relay restart
        // (numbering starts over). The message itself is current: keep it.
        this.gaps++;
        this.emit("gap", { channel: msg.channel, expected: state.lastSeq + 1, got: msg.seq });
      }
      state.lastSeq = msg.seq;
      state.stale = false;
    }
    this.emit("message", message);
  };

  // Closes the socket ourselves (timeout, silence) without waiting for the browser's
  // closing handshake, which a dead peer never completes.
  Client.prototype.drop = function (code, reason) {
    var ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try { ws.close(); } catch (e) { /* already closing */ }
    this.onClose(code, reason);
  };

  Client.prototype.onClose = function (code, reason) {
    var self = this;
    var wasOpen = this.connected;
    clearTimeout(this.timers.connect);
    clearInterval(this.timers.info);
    this.ws = null;
    this.connected = false;
    this.edge = null;
    if (wasOpen) {
      // Until the snapshot or next message on the new socket, what we hold may
      // be old.
      this.channels.forEach(function (state, channel) {
        state.stale = true;
        self.emit("stale", { channel: channel, lastSeq: state.lastSeq });
      });
    }
    if (this.stopped) {
      this.emit("close", { code: code, reason: reason, wasOpen: wasOpen, willRetryInMs: null });
      return;
    }
    var delay, cause;
    if (this.drainHint !== null) {
      // Asked to leave: the edge's delay plus a little jitter of our own.
      delay = this.drainHint + Math.random() * this.options.minDelayMs;
      cause = "drain";
      this.drainHint = null;
      this.attempt++;
    } else {
      // Full jitter: anywhere between 0 and the exponential ceiling, so clients
      // that lost the same edge do not come back in lockstep.
      var ceiling = Math.min(this.options.maxDelayMs,
        this.options.minDelayMs * Math.pow(2, this.attempt));
      delay = Math.random() * ceiling;
      cause = "backoff";
      this.attempt++;
    }
    delay = Math.round(delay);
    this.emit("close", { code: code, reason: reason, wasOpen: wasOpen, willRetryInMs: delay });
    this.emit("reconnecting", { attempt: this.attempt, delayMs: delay, cause: cause });
    this.timers.retry = setTimeout(function () { self.connect(); }, delay);
  };

  // Stops for good: no more reconnects. Subscriptions are forgotten with the client.
  Client.prototype.close = function () {
    this.stopped = true;
    clearTimeout(this.timers.retry);
    if (this.ws) this.drop(1000, "closed by the client");
  };

  var Pushfleet = { Client: Client, version: "0.1.0" };
  if (typeof module === "object" && module && module.exports) module.exports = Pushfleet;
  if (root) root.Pushfleet = Pushfleet;
})(typeof window !== "undefined" ? window : typeof globalThis !== "undefined" ? globalThis : this);
