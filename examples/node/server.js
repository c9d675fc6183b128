// A minimal Node.js server for the Node getting-started guide (docs/getting-started/node.md).
// forkyard starts one per worker slot and passes the slot's port in PORT.
"use strict";
const http = require("node:http");

const port = Number(process.env.PORT);
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "application/json" }).end(
    JSON.stringify({
      hello: "from a Node worker",
      pool: process.env.FORKYARD_POOL,
      worker: process.env.FORKYARD_WORKER,
      pid: process.pid,
    }),
  );
});

server.listen(port, "127.0.0.1");

// forkyard sends SIGTERM after it stopped routing to this worker: finish what is in
// flight, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
