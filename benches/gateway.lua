-- wrk script for the gateway benchmark (benches/src/bin/gateway.rs): POSTs the echo call's JSON
-- body, read from $BODY or /tmp/echo.json (`gateway body > /tmp/echo.json`).
local path = os.getenv("BODY") or "/tmp/echo.json"
local file = assert(io.open(path, "r"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

