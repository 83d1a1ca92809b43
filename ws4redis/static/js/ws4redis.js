/*!
 * ws4redis.js - the browser client of ws4redis (django-websocket-redis), MIT licence.
 *
 *   var ws4redis = WS4Redis({
 *       uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast",
 *       receive_message: function (message) { ... },
 *       heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}
 *   });
 *
 * One object keeps one WebSocket alive: it reconnects after every close it did not ask for,
 * waiting a random time below an exponentially growing ceiling ("full jitter"), and, when a
 * heartbeat message is configured, closes and reopens a connection whose server has gone
 * silent.  It needs no library; jQuery (3 or 4) may be on the page and may be passed as the
 * second argument, as the 0.5 client required, but it is not used.
 * The documentation is docs/client.rst.
 */
(function (root, factory) {
    "use strict";
    var WS4Redis = factory(root);
    if (typeof module === "object" && module && module.exports) {
        module.exports = WS4Redis;
    } else {
        root.WS4Redis = WS4Redis;
    }
})(typeof self !== "undefined" ? self : this, function (root) {
    "use strict";

    // The values of WebSocket.readyState, which get_state() returns.
    var CONNECTING = 0;
    var OPEN = 1;
    var CLOSING = 2;
    var CLOSED = 3;

    // The close code (application range) of a connection given up for missed heartbeats.
    var MISSED_HEARTBEATS_CODE = 4000;
    // The subprotocol of missed-message recovery (option "history"; docs: Recovery).
    var HISTORY_PROTOCOL = "ws4redis.history.v1";

    var DEFAULTS = {
        uri: null,
        protocols: null,
        connecting: null,
        connected: null,
        receive_message: null,
        disconnected: null,
        heartbeat_msg: null,
        heartbeat_interval: 5000,
        max_missed_heartbeats: 3,
        reconnect_base: 1000,
        reconnect_max: 30000,
        binary_type: "arraybuffer",
        history: false,
        history_gap: null,
        log: true
    };

    function merged(defaults, options) {
        var result = {};
        var key;
        for (key in defaults) {
            if (Object.prototype.hasOwnProperty.call(defaults, key)) {
                result[key] = defaults[key];
            }
        }
        for (key in options) {
            if (Object.prototype.hasOwnProperty.call(options, key) && options[key] !== undefined) {
                result[key] = options[key];
            }
        }
        return result;
    }

    function check_options(opts) {
        function fail(message) {
            throw new TypeError("WS4Redis: " + message);
        }
        function positive(name) {
            if (typeof opts[name] !== "number" || !(opts[name] > 0)) {
                fail('option "' + name + '" must be a positive number of milliseconds');
            }
        }
        if (typeof opts.uri !== "string" || !opts.uri) {
            fail('option "uri" is required, e.g. "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast"');
        }
        positive("heartbeat_interval");
        positive("reconnect_base");
        positive("reconnect_max");
        if (opts.reconnect_max < opts.reconnect_base) {
            fail('option "reconnect_max" must not be smaller than "reconnect_base"');
        }
        var missed = opts.max_missed_heartbeats;
        if (typeof missed !== "number" || missed < 1 || Math.floor(missed) !== missed) {
            fail('option "max_missed_heartbeats" must be a whole number, at least 1');
        }
        if (opts.binary_type !== "arraybuffer" && opts.binary_type !== "blob") {
            fail('option "binary_type" must be "arraybuffer" or "blob"');
        }
        var callbacks = ["connecting", "connected", "receive_message", "disconnected"];
        callbacks.push("history_gap");
        callbacks.forEach(function (name) {
            if (opts[name] !== null && typeof opts[name] !== "function") {
                fail('option "' + name + '" must be a function');
            }
        });
    }

    function logger(option) {
        if (typeof option === "function") {
            return function (level, message) {
                option(message, level);
            };
        }
        if (!option || !root.console) {
            return function () {};
        }
        return function (level, message) {
            var write = root.console[level] || root.console.log;
            write.call(root.console, "ws4redis: " + message);
        };
    }

    /**
     * Open a WebSocket to options.uri and keep it open until close() is called.
     * Works with and without `new`.  Throws a TypeError for invalid options.
     */
    // The uri with "last-id=tag:id,..." for the positions held (replacing an earlier one).
    function history_uri(uri, positions) {
        var ids = Object.keys(positions).map(function (tag) {
            return tag + ":" + positions[tag];
        });
        var base = uri.replace(/([?&])last-id=[^&#]*&?/, "$1").replace(/[?&]$/, "");
        if (!ids.length) {
            return base;
        }
        return base + (base.indexOf("?") < 0 ? "?" : "&") + "last-id=" + ids.join(",");
    }

    // [header, payload] of an enveloped message (text: string; binary: ArrayBuffer payload).
    function split_envelope(data) {
        if (typeof data === "string") {
            var newline = data.indexOf("\n");
            return [data.slice(0, newline), data.slice(newline + 1)];
        }
        var bytes = new Uint8Array(data);
        var end = bytes.indexOf(10);
        var header = String.fromCharCode.apply(null, bytes.subarray(0, end));
        return [header, data.slice(end + 1)];
    }

    function WS4Redis(options, $) {
        if (!(this instanceof WS4Redis)) {
            return new WS4Redis(options, $);
        }
        var self = this;
        var opts = merged(DEFAULTS, options || {});
        check_options(opts);
        var log = logger(opts.log);
        var heartbeat = opts.heartbeat_msg === null ? null : opts.heartbeat_msg;
        var ws = null; // the current WebSocket; null between connections
        var stopped = false; // close() was called: never reconnect again
        var failures = 0; // reconnects since the last successful open
        var missed = 0; // heartbeat intervals without a word from the server
        var retry_timer = null;
        var heartbeat_timer = null;

        function call(name) {
            var callback = opts[name];
            if (!callback) {
                return;
            }
            try {
                callback.apply(self, Array.prototype.slice.call(arguments, 1));
            } catch (error) {
                // A bug in a callback must not stop the reconnecting; report it as uncaught.
                setTimeout(function () {
                    throw error;
                }, 0);
            }
        }

        var positions = {}; // option "history": the last stream id seen, per channel tag

        function open_socket() {
            if (opts.history) {
                var offered = [].concat(opts.protocols || [], HISTORY_PROTOCOL);
                return new WebSocket(history_uri(opts.uri, positions), offered);
            }
            if (opts.protocols) {
                return new WebSocket(opts.uri, opts.protocols);
            }
            return new WebSocket(opts.uri);
        }

        // Option "history": strip the envelope "header\n", remember the ids; true if handled.
        function receive_enveloped(event) {
            var parts = split_envelope(event.data);
            var header = parts[0];
            var payload = parts[1];
            if (header === "sync" || header === "gap") {
                var items = payload ? String(payload).split(",") : [];
                if (header === "gap") {
                    log("warn", "messages missed while disconnected are no longer available");
                    call("history_gap", items);
                }
                items.forEach(function (item) {
                    var colon = item.indexOf(":");
                    if (header === "sync" && colon > 0) {
                        positions[item.slice(0, colon)] = item.slice(colon + 1);
                    }
                });
                return;
            }
            var colon = header.indexOf(":");
            if (colon > 0) {
                positions[header.slice(0, colon)] = header.slice(colon + 1);
            }
            if (typeof payload !== "string" && opts.binary_type === "blob") {
                payload = new Blob([payload]);
            }
            call("receive_message", payload, event);
        }

        function connect(first) {
            retry_timer = null;
            if (stopped) {
                return;
            }
            var socket;
            if (first) {
                socket = open_socket(); // a malformed uri throws to the caller
            } else {
                try {
                    socket = open_socket();
                } catch (error) {
                    closed({ type: "close", code: 1006, reason: String(error), wasClean: false });
                    return;
                }
            }
            socket.binaryType = opts.history ? "arraybuffer" : opts.binary_type;
            socket.onopen = function (event) {
                if (socket !== ws) {
                    return;
                }
                if (stopped) {
                    socket.close(1000); // close() was called while connecting
                    return;
                }
                failures = 0;
                log("info", "connected");
                start_heartbeats();
                call("connected", event);
            };
            socket.onmessage = function (event) {
                if (socket !== ws) {
                    return;
                }
                missed = 0; // any message shows that the server is alive
                if (heartbeat !== null && event.data === heartbeat) {
                    return;
                }
                if (opts.history && socket.protocol === HISTORY_PROTOCOL) {
                    receive_enveloped(event);
                    return;
                }
                call("receive_message", event.data, event);
            };
            socket.onclose = function (event) {
                if (socket === ws) {
                    closed(event);
                }
            };
            ws = socket;
            log("info", "connecting to " + opts.uri);
            call("connecting");
        }

        function closed(event) {
            ws = null;
            stop_heartbeats();
            if (stopped) {
                log("info", "closed");
                call("disconnected", event, null);
                return;
            }
            var delay = next_delay();
            log("warn", "disconnected (" + event.code + "), reconnecting in " + delay + " ms");
            retry_timer = setTimeout(connect, delay);
            call("disconnected", event, delay); // may call close(), which cancels the retry
        }

        // Full jitter: a random wait below base * 2^failures, never above reconnect_max.
        function next_delay() {
            var ceiling = Math.min(opts.reconnect_max, opts.reconnect_base * Math.pow(2, failures));
            failures += 1;
            return Math.floor(Math.random() * ceiling);
        }

        function start_heartbeats() {
            missed = 0;
            if (heartbeat !== null) {
                heartbeat_timer = setInterval(beat, opts.heartbeat_interval);
            }
        }

        function stop_heartbeats() {
            if (heartbeat_timer !== null) {
                clearInterval(heartbeat_timer);
                heartbeat_timer = null;
            }
        }

        function beat() {
            if (!ws || ws.readyState !== OPEN) {
                return;
            }
            missed += 1;
            if (missed >= opts.max_missed_heartbeats) {
                give_up(MISSED_HEARTBEATS_CODE, "missed " + missed + " heartbeats");
                return;
            }
            ws.send(heartbeat);
        }

        // Drop a connection that may be dead without waiting for its closing handshake.
        function give_up(code, reason) {
            var socket = ws;
            socket.onopen = socket.onmessage = socket.onclose = null;
            try {
                socket.close(code, reason);
            } catch (ignored) {
                // already closing
            }
            closed({ type: "close", code: code, reason: reason, wasClean: false });
        }

        function state() {
            if (ws === null) {
                return CLOSED;
            }
            if (stopped && ws.readyState === CONNECTING) {
                return CLOSING;
            }
            return ws.readyState;
        }

        /** Send a string, Blob, ArrayBuffer or typed array; false when not connected. */
        this.send_message = function (message) {
            if (ws === null || stopped || ws.readyState !== OPEN) {
                return false;
            }
            ws.send(message);
            return true;
        };

        /** Close the connection (default code 1000) and never reconnect. */
        this.close = function (code, reason) {
            if (stopped) {
                return;
            }
            if (ws !== null && ws.readyState === OPEN) {
                // throws for a code other than 1000 or 3000-4999, before anything changed
                ws.close(
                    typeof code === "number" ? code : 1000,
                    typeof reason === "string" ? reason : ""
                );
            }
            // CONNECTING: closed in onopen, or its failure ends it; CLOSING: ends by itself.
            stopped = true;
            if (retry_timer !== null) {
                clearTimeout(retry_timer);
                retry_timer = null;
            }
            stop_heartbeats();
            if (ws === null) {
                log("info", "closed");
            }
        };

        /** The WebSocket readyState: 0 connecting, 1 open, 2 closing, 3 closed or waiting. */
        this.get_state = state;
        this.is_connecting = function () {
            return state() === CONNECTING;
        };
        this.is_connected = function () {
            return state() === OPEN;
        };
        this.is_closing = function () {
            return state() === CLOSING;
        };
        this.is_closed = function () {
            return state() === CLOSED;
        };

        connect(true);
    }

    WS4Redis.CONNECTING = CONNECTING;
    WS4Redis.OPEN = OPEN;
    WS4Redis.CLOSING = CLOSING;
    WS4Redis.CLOSED = CLOSED;
    WS4Redis.MISSED_HEARTBEATS_CODE = MISSED_HEARTBEATS_CODE;
    return WS4Redis;
});
