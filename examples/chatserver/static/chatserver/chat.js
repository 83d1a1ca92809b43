/*
 * The page side of the demo's chat rooms: shows the connection state and the messages, and
 * sends what is typed.  The WebSocket itself is a WS4Redis client, created in each template.
 *
 *   var room = ChatRoom({username: "john", groups: ["chatters"]});
 *   var ws4redis = WS4Redis({uri: ..., receive_message: room.receive_message, ...});
 *   room.attach(ws4redis);
 */
(function (root) {
    "use strict";

    var STATE_TEXT = {
        connecting: "Connecting…",
        connected: "Connected",
        reconnecting: "Reconnecting…",
        closed: "Closed"
    };

    function element(tag, className, text) {
        var node = document.createElement(tag);
        if (className) {
            node.className = className;
        }
        if (text !== undefined) {
            node.textContent = text;
        }
        return node;
    }

    function time_of(iso) {
        var date = iso ? new Date(iso) : new Date();
        if (isNaN(date.getTime())) {
            date = new Date();
        }
        return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }

    function random_id() {
        var bytes = new Uint8Array(16);
        root.crypto.getRandomValues(bytes);
        return Array.prototype.map
            .call(bytes, function (b) {
                return (b < 16 ? "0" : "") + b.toString(16);
            })
            .join("");
    }

    function ChatRoom(options) {
        if (!(this instanceof ChatRoom)) {
            return new ChatRoom(options);
        }
        var self = this;
        var username = options.username || "";
        var groups = options.groups || [];
        var list = document.getElementById("messages");
        var form = document.getElementById("chat-form");
        var input = document.getElementById("text");
        var state = document.getElementById("ws-state");
        var problem = document.getElementById("chat-error");
        var via_websocket = document.getElementById("via-websocket");
        var seen = {}; // message ids shown already: a reconnect sends the persisted one again
        var client = null;

        function show_state(name, detail) {
            state.setAttribute("data-state", name);
            state.textContent = STATE_TEXT[name] + (detail ? " " + detail : "");
        }

        function show_problem(text) {
            problem.textContent = text || "";
            problem.hidden = !text;
        }

        function append(item) {
            var at_bottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
            list.appendChild(item);
            if (at_bottom) {
                list.scrollTop = list.scrollHeight;
            }
        }

        function chat_line(message) {
            var item = element("li", "message");
            if (message.id) {
                item.setAttribute("data-id", message.id);
            }
            if (message.from === username && username) {
                item.className += " mine";
            }
            var head = element("div", "head");
            head.appendChild(element("span", "from", message.from || "?"));
            if (message.to) {
                head.appendChild(element("span", "to", "→ " + message.to));
            }
            if (message.group) {
                head.appendChild(element("span", "to", "→ " + message.group));
            }
            var meta = time_of(message.at);
            if (message.via) {
                meta += message.via === "websocket" ? " · via WebSocket" : " · via Django";
            }
            head.appendChild(element("span", "meta", meta));
            item.appendChild(head);
            item.appendChild(element("div", "text", String(message.text)));
            return item;
        }

        function notice_line(message) {
            var item = element("li", "notice", message.from + " wrote to " + message.group);
            item.setAttribute("data-id", message.id);
            return item;
        }

        /** receive_message callback: text is JSON from the views, binary is shown as such. */
        this.receive_message = function (data) {
            if (typeof data !== "string") {
                var size = data.byteLength !== undefined ? data.byteLength : data.size;
                append(element("li", "raw", "Binary message, " + size + " bytes"));
                return;
            }
            var message;
            try {
                message = JSON.parse(data);
            } catch (ignored) {
                message = null;
            }
            if (!message || typeof message !== "object" || !("text" in message || message.notice)) {
                append(element("li", "raw", data));
                return;
            }
            if (message.id) {
                if (seen[message.id + (message.notice ? ":notice" : "")]) {
                    return;
                }
                seen[message.id + (message.notice ? ":notice" : "")] = true;
            }
            if (message.notice) {
                if (groups.indexOf(message.group) < 0) {
                    append(notice_line(message)); // members got the message itself
                }
                return;
            }
            append(chat_line(message));
        };

        this.connecting = function () {
            show_state("connecting");
        };

        this.connected = function () {
            show_state("connected");
            show_problem("");
        };

        this.disconnected = function (event, retry_in) {
            if (retry_in === null || retry_in === undefined) {
                show_state("closed");
            } else {
                show_state("reconnecting", "(in " + (retry_in / 1000).toFixed(1) + " s)");
            }
        };

        function send_through_websocket(text) {
            var message = {
                id: random_id(),
                from: username || "anonymous",
                text: text,
                at: new Date().toISOString(),
                via: "websocket"
            };
            if (client.send_message(JSON.stringify(message))) {
                input.value = "";
            } else {
                show_problem("Not connected: the message was not sent.");
            }
        }

        function send_through_django() {
            var body = new FormData(form);
            var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
            input.disabled = true;
            root.fetch(form.getAttribute("action") || root.location.pathname, {
                method: "POST",
                body: body,
                credentials: "same-origin",
                headers: { "X-CSRFToken": token, "X-Requested-With": "XMLHttpRequest" }
            })
                .then(function (response) {
                    return response.json().then(function (answer) {
                        if (!response.ok) {
                            throw new Error(answer.error || "HTTP " + response.status);
                        }
                        input.value = "";
                        show_problem("");
                    });
                })
                .catch(function (error) {
                    show_problem("Not sent: " + error.message);
                })
                .then(function () {
                    input.disabled = false;
                    input.focus();
                });
        }

        /** Send the form's message with client once the user submits it. */
        this.attach = function (ws4redis) {
            client = ws4redis;
            form.addEventListener("submit", function (event) {
                event.preventDefault();
                var text = input.value.trim();
                if (!text) {
                    return;
                }
                if (via_websocket && via_websocket.checked) {
                    send_through_websocket(text);
                } else {
                    send_through_django();
                }
            });
            return self;
        };

        show_state("connecting");
    }

    root.ChatRoom = ChatRoom;
})(window);
