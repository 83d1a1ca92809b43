/*
 * Test harness loaded into a page after ws4redis.js: track() creates a WS4Redis client whose
 * callbacks record everything they see in window.clients[name], for the tests to read.
 */
(function () {
    "use strict";

    function describe(data) {
        if (typeof data === "string") {
            return { type: "text", text: data };
        }
        if (data instanceof ArrayBuffer) {
            return { type: "arraybuffer", bytes: Array.from(new Uint8Array(data)) };
        }
        if (data instanceof Blob) {
            return { type: "blob", size: data.size };
        }
        return { type: typeof data };
    }

    window.clients = {};

    /**
     * Create the client `name` with `options` (callbacks added here); `how` is "call" (no
     * `new`), "new", or "jquery-ready": inside jQuery(document).ready, passing its $ along,
     * as the 0.5 documentation does.
     */
    window.track = function (name, options, how) {
        var record = {
            connecting: 0,
            connected: 0,
            messages: [],
            closes: [],
            gaps: [],
            this_is_client: [],
            log: [],
            client: null
        };
        var opts = Object.assign({}, options, {
            connecting: function () {
                record.connecting += 1;
                record.this_is_client.push(this instanceof WS4Redis);
            },
            connected: function () {
                record.connected += 1;
                record.this_is_client.push(this instanceof WS4Redis);
            },
            receive_message: function (data) {
                record.messages.push(describe(data));
            },
            history_gap: function (tags) {
                record.gaps.push(tags);
            },
            disconnected: function (event, retry_in) {
                record.closes.push({
                    code: event.code,
                    reason: event.reason,
                    retry_in: retry_in === undefined ? "missing" : retry_in
                });
            }
        });
        if (options.log === "record") {
            opts.log = function (message, level) {
                record.log.push(level + " " + message);
            };
        }
        window.clients[name] = record;
        if (how === "jquery-ready") {
            jQuery(document).ready(function ($) {
                record.client = WS4Redis(opts, $);
            });
        } else if (how === "new") {
            record.client = new WS4Redis(opts);
        } else {
            record.client = WS4Redis(opts);
        }
        return true;
    };

    /** What the tests read: the record without the client object, plus the client's state. */
    window.snapshot = function (name) {
        var record = window.clients[name];
        var client = record.client;
        return {
            connecting: record.connecting,
            connected: record.connected,
            messages: record.messages,
            closes: record.closes,
            gaps: record.gaps,
            this_is_client: record.this_is_client,
            log: record.log,
            state: client ? client.get_state() : null,
            is_connecting: client ? client.is_connecting() : null,
            is_connected: client ? client.is_connected() : null,
            is_closing: client ? client.is_closing() : null,
            is_closed: client ? client.is_closed() : null,
            is_instance: client instanceof WS4Redis
        };
    };
})();
