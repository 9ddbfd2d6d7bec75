#!/usr/bin/env python3
"""A zrpc client in standard-library Python 3, written from docs/PROTOCOL.md alone.

Usage: zrpc_client.py HOST:PORT   (or tcp://HOST:PORT)

It connects over TCP, exchanges the preface and HELLO (§2, §3, §5), calls the Greeter service of
§9's worked examples with the JSON codec (§8, §9) and checks every answer: no, one and several
arguments, an application error, an Option, a u64 beyond 2^53, bytes, a bare argument and an
unknown method or service refused with the right status code, and three calls in flight at once.
It asks the built-in reflection service (§18) what the server serves. Then it says GOAWAY (§14)
and waits for the server to close.

It prints one line per check and exits 0 when all passed, 1 otherwise. The last line, on
success, is `all N checks passed, M requests sent`.
"""

import json
import socket
import struct
import sys

PREFACE = b"ZRPC\x01\x00\x00\x00"  # §3: magic, version 1, three reserved bytes

# §4: frame kinds and flags.
HELLO, REQUEST, RESPONSE, CANCEL, PING, PONG, GOAWAY, CREDIT = range(1, 9)
COMPRESSED = 0x02
HEADER = struct.Struct(">IBBQ")  # length, kind, flags, id: big-endian, 14 bytes
HEADER_AFTER_LENGTH = 10  # kind, flags and id count in `length`

# §8: codec ids and the status codes this client looks for.
CODEC_JSON = 1
OK, INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE = 0, 3, 5, 14

MAX_FRAME = 16 * 1024 * 1024  # what this client accepts, announced in its HELLO
FLOW_TAG = 0x01  # §5: the HELLO extension carrying the peer's request limits
TIMEOUT_US = 10_000_000  # each call's deadline, sent as the time left (§5 REQUEST, §12)
SOCKET_TIMEOUT_S = 30  # so that a server that never answers fails the run instead of hanging it


class ProtocolError(Exception):
    """The server sent something PROTOCOL.md does not allow, or closed too early."""


class Closed(ProtocolError):
    """The server closed the connection between two frames."""


class Reader:
    """Reads the fields of one frame body, front to back."""

    def __init__(self, body):
        self.body = body
        self.at = 0

    def take(self, n, what):
        if self.at + n > len(self.body):
            raise ProtocolError(f"the body ends inside {what}")
        part = self.body[self.at : self.at + n]
        self.at += n
        return part

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack(">I", self.take(4, what))[0]

    def text(self, n, what):
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{what} is not UTF-8: {e}") from None

    def rest(self):
        part = self.body[self.at :]
        self.at = len(self.body)
        return part


class Response:
    """A RESPONSE (§5): its status code and message, and its payload."""

    def __init__(self, request_id, flags, body):
        r = Reader(body)
        self.id = request_id
        self.code = r.u8("code")
        self.message = r.text(r.u16("message_len"), "message")
        self.metadata = read_metadata(r)
        if flags & COMPRESSED:
            raise ProtocolError("a compressed response, though this client announced no compression")
        self.payload = r.rest()

    def __repr__(self):
        return f"Response(id={self.id}, code={self.code}, message={self.message!r}, payload={self.payload!r})"


def read_metadata(r):
    """A metadata block (§6): count, then key/value entries."""
    entries = []
    for _ in range(r.u16("metadata count")):
        key = r.text(r.u8("key_len"), "metadata key")
        entries.append((key, r.take(r.u32("value_len"), "metadata value")))
    return entries


def frame(kind, request_id, body, flags=0):
    return HEADER.pack(HEADER_AFTER_LENGTH + len(body), kind, flags, request_id) + body


def hello_body(name):
    """Our HELLO (§5): a name, our frame limit, JSON only, no compression, no token, no FLOW."""
    name = name.encode("utf-8")
    return (
        bytes([len(name)]) + name
        + struct.pack(">I", MAX_FRAME)
        + bytes([1, CODEC_JSON])
        + bytes([0])
        + struct.pack(">H", 0)
    )


class Connection:
    """One zrpc connection, this side the connector: its request ids are odd (§7)."""

    def __init__(self, address, name):
        host, port = parse_address(address)
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        self.next_id = 1
        self.arrived = {}  # responses read while waiting for another id
        self.requests_sent = 0
        # §2: both sides send preface and HELLO at once, without waiting for the other's.
        self.sock.sendall(PREFACE + frame(HELLO, 0, hello_body(name)))
        preface = self.read_exact(len(PREFACE), "the preface")
        if preface[:5] != PREFACE[:5]:
            raise ProtocolError(f"not a zrpc version 1 preface: {preface.hex(' ')}")
        kind, _, _, body = self.read_frame()
        if kind != HELLO:
            raise ProtocolError(f"the first frame is of kind {kind}, not HELLO")
        self.peer = parse_hello(body)

    def read_exact(self, n, what, between_frames=False):
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                error = Closed if between_frames and not data else ProtocolError
                raise error(f"the server closed the connection inside {what}")
            data += chunk
        return bytes(data)

    def read_frame(self):
        """The next frame: (kind, flags, id, body). Checks `length` before reading the rest (§4)."""
        (length,) = struct.unpack(">I", self.read_exact(4, "a frame's length", between_frames=True))
        if not HEADER_AFTER_LENGTH <= length <= MAX_FRAME:
            raise ProtocolError(f"a frame length of {length}, outside 10..={MAX_FRAME}")
        rest = self.read_exact(length, "a frame")
        kind, flags, request_id = struct.unpack(">BBQ", rest[:HEADER_AFTER_LENGTH])
        return kind, flags, request_id, rest[HEADER_AFTER_LENGTH:]

    def send_request(self, method, payload):
        """Sends a REQUEST (§5) in JSON, with a deadline and no metadata; returns its id."""
        method = method.encode("utf-8")
        if not 1 <= len(method) <= 255:
            raise ValueError(f"a method name is 1 to 255 bytes, not {len(method)}")
        body = (
            bytes([CODEC_JSON])
            + struct.pack(">Q", TIMEOUT_US)
            + bytes([len(method)]) + method
            + struct.pack(">H", 0)  # metadata: no entries
            + payload
        )
        if HEADER_AFTER_LENGTH + len(body) > self.peer["max_frame"]:
            raise ValueError("the request is larger than the server accepts")
        request_id = self.next_id
        self.next_id += 2
        self.sock.sendall(frame(REQUEST, request_id, body))
        self.requests_sent += 1
        return request_id

    def response(self, request_id):
        """Reads frames until the RESPONSE for `request_id`, answering PINGs on the way."""
        while request_id not in self.arrived:
            kind, flags, frame_id, body = self.read_frame()
            if kind == RESPONSE:
                self.arrived[frame_id] = Response(frame_id, flags, body)
            elif kind == PING:
                self.sock.sendall(frame(PONG, frame_id, b""))
            elif kind == GOAWAY:
                r = Reader(body)
                code = r.u8("code")
                raise ProtocolError(f"GOAWAY code {code}: {r.text(r.u16('message_len'), 'message')}")
            # PONG, CREDIT (we send no oneway requests) and unknown kinds: nothing to do (§10).
        return self.arrived.pop(request_id)

    def call(self, method, payload):
        return self.response(self.send_request(method, payload))

    def close(self):
        """Graceful close (§14): GOAWAY `Unavailable`; the server then closes its end."""
        message = b"python client done"
        body = bytes([UNAVAILABLE]) + struct.pack(">H", len(message)) + message
        self.sock.sendall(frame(GOAWAY, 0, body))  # last_id 0: the server made no requests
        try:
            while True:
                self.read_frame()  # its own GOAWAY, if any
        except Closed:
            pass
        self.sock.close()


def parse_address(address):
    address = address.removeprefix("tcp://")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT or tcp://HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


def parse_hello(body):
    r = Reader(body)
    hello = {"name": r.text(r.u8("name_len"), "name"), "max_frame": r.u32("max_frame")}
    hello["codecs"] = list(r.take(r.u8("codec_count"), "the codec list"))
    hello["compressions"] = list(r.take(r.u8("compression_count"), "the compression list"))
    hello["token"] = r.take(r.u16("token_len"), "the token")
    hello["max_requests"] = None
    while r.at < len(body):
        tag, value = r.u8("an extension tag"), r.take(r.u16("an extension length"), "an extension")
        if tag == FLOW_TAG and hello["max_requests"] is None and len(value) >= 8:
            hello["max_requests"], hello["request_bytes"] = struct.unpack(">II", value[:8])
    if hello["max_frame"] < 1024:
        raise ProtocolError(f"a HELLO max_frame of {hello['max_frame']}, below 1024")
    return hello


def as_json(value):
    """JSON as §9 says zrpc writes it: UTF-8, no whitespace."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, what, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed.append(what)
            print(f"FAIL  {what}: {detail}")

    def answer(self, what, response, expected):
        """An OK response whose JSON payload is `expected`."""
        if response.code != OK:
            return self.check(what, False, f"status {response.code}: {response.message}")
        try:
            got = json.loads(response.payload)
        except ValueError as e:
            return self.check(what, False, f"the payload is not JSON ({e}): {response.payload!r}")
        self.check(what, got == expected and type(got) is type(expected), f"got {got!r}, expected {expected!r}")

    def refused(self, what, response, code, mentions):
        self.check(
            what,
            response.code == code and mentions in response.message,
            f"expected status {code} mentioning {mentions!r}, got {response!r}",
        )


def run(address):
    checks = Checks()
    conn = Connection(address, "python-client")
    peer = conn.peer

    def call(method, args):
        """Calls `method` with `args` as its JSON payload."""
        return conn.call(method, as_json(args))

    checks.check(f"HELLO from {peer['name']!r} lists JSON (codec 1)", CODEC_JSON in peer["codecs"], peer["codecs"])

    # No arguments: an empty object, or an empty array; the answer to `()` is null.
    checks.answer("ping() as {} answers null", call("Greeter.ping", {}), None)
    checks.answer("ping() as [] answers null", call("Greeter.ping", []), None)

    # One argument: an object of one key, or an array of one value; never the bare value.
    checks.answer("hello(name) as an object", call("Greeter.hello", {"name": "python"}), "hello, python")
    checks.answer("hello(name) as an array", call("Greeter.hello", ["wörld ✓"]), "hello, wörld ✓")
    bare = call("Greeter.hello", "python")
    checks.refused("hello(name) with a bare string is InvalidArgument", bare, INVALID_ARGUMENT, "Greeter.hello")

    # Several arguments, and an application error, which is an OK response.
    add = call("Greeter.add", {"b": 2, "a": 40})
    checks.answer('add(a, b) answers {"Ok":42}', add, {"Ok": 42})
    checks.check('the answer\'s bytes are exactly {"Ok":42}', add.payload == b'{"Ok":42}', add.payload)
    overflow = call("Greeter.add", [2**63 - 1, 1])
    checks.answer("an application error travels in an OK response", overflow, {"Err": "Overflow"})

    # Option, and a u64 beyond 2^53, exact both ways.
    checks.answer("lookup(u64::MAX) answers Some", call("Greeter.lookup", {"key": 2**64 - 1}), "max")
    checks.answer("lookup(2^64 - 2) answers None as null", call("Greeter.lookup", {"key": 2**64 - 2}), None)

    # Bytes are arrays of numbers.
    checks.answer("reverse(bytes) answers an array", call("Greeter.reverse", {"data": [1, 2, 255]}), [255, 2, 1])

    # What the server does not serve is NotFound, naming it; the connection stays open.
    checks.refused("an unknown method is NotFound", call("Greeter.bye", {}), NOT_FOUND, "bye")
    checks.refused("an unknown service is NotFound", call("Nobody.call", {}), NOT_FOUND, "Nobody")

    # Reflection (§18): what the server serves, in JSON.
    listed = call("zrpc.Reflection.list", {})
    services = json.loads(listed.payload) if listed.code == OK else []
    names = [service["name"] for service in services]
    checks.check(
        "zrpc.Reflection.list() names Greeter and itself",
        "Greeter" in names and "zrpc.Reflection" in names,
        listed,
    )
    greeter = next((service for service in services if service["name"] == "Greeter"), {"methods": []})
    methods = {method["name"]: method for method in greeter["methods"]}
    checks.check(
        "list() gives Greeter's methods in declaration order",
        list(methods) == ["ping", "hello", "add", "lookup", "reverse"],
        list(methods),
    )
    add = methods.get("add", {})
    checks.check(
        "list() gives add's argument names and types, and its application error",
        [(arg["name"], arg["type"]["rust"]) for arg in add.get("args", [])] == [("a", "i64"), ("b", "i64")]
        and add.get("errors") == "application"
        and add.get("error", {}).get("rust") == "MathError",
        add,
    )
    unknown = call("zrpc.Reflection.describe", {"name": "Greeter.bye"})
    checks.refused("describe() of an unknown method is NotFound", unknown, NOT_FOUND, "bye")

    # Calls in flight at once (within the server's FLOW limit), answered by id in any order.
    in_flight = min(3, peer["max_requests"] or 3)
    sent = [(conn.send_request("Greeter.hello", as_json([str(n)])), f"hello, {n}") for n in range(in_flight)]
    for request_id, expected in reversed(sent):
        what = f"request {request_id}, one of {in_flight} in flight, answered by id"
        checks.answer(what, conn.response(request_id), expected)

    conn.close()
    checks.check("the server closed the connection after our GOAWAY", True)

    if checks.failed:
        print(f"{len(checks.failed)} of {checks.passed + len(checks.failed)} checks failed")
        return 1
    print(f"all {checks.passed} checks passed, {conn.requests_sent} requests sent")
    return 0


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        return run(argv[1])
    except (OSError, ProtocolError, ValueError) as e:
        print(f"FAIL  {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
