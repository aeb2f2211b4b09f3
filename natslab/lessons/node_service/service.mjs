// Lesson 07.1: a NATS service in Node.js, written with the official service API (@nats-io/services),
// answering Python callers on the same subjects and the same discovery protocol ($SRV.PING/INFO/STATS).
//
//   NATS_URL=nats://127.0.0.1:4222 node service.mjs
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), SERVICE_NAME (default "inventory"),
// SERVICE_VERSION (default "1.0.0"), CONNECTION_NAME (the name the server shows in /connz).
// It prints one JSON line {"ready": true, "id": ...} once the service is registered on the server,
// and stops cleanly on SIGTERM/SIGINT (stops the service, drains the connection, exits 0).
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";

const url = process.env.NATS_URL || "nats://127.0.0.1:4222";
const name = process.env.SERVICE_NAME || "inventory";
const version = process.env.SERVICE_VERSION || "1.0.0";

const nc = await connect({
  servers: url,
  name: process.env.CONNECTION_NAME || `${name}-node`,
  maxReconnectAttempts: 5, // a service whose server is gone for good ends instead of retrying forever
});

const stock = new Map([["apple", 7], ["pear", 0], ["plum", 3]]);
const enc = new TextEncoder();
const dec = new TextDecoder();
const json = (value) => enc.encode(JSON.stringify(value));

const svcm = new Svcm(nc);
const service = await svcm.add({
  name,
  version,
  description: "stock levels of the order system, served by Node.js",
  metadata: { language: "javascript", runtime: `node ${process.version}` },
});

// A group is a subject prefix: the endpoints below listen on inventory.stock and inventory.reserve.
const group = service.addGroup("inventory");

group.addEndpoint("stock", (err, msg) => {
  if (err) return;
  let sku;
  try {
    sku = JSON.parse(dec.decode(msg.data)).sku;
  } catch {
    msg.respondError(400, "send JSON like {\"sku\": \"apple\"}");
    return;
  }
  if (!stock.has(sku)) {
    msg.respondError(404, `no such sku: ${sku}`);
    return;
  }
  msg.respond(json({ sku, available: stock.get(sku), served_by: "node", service_id: service.info().id }));
});

group.addEndpoint("reserve", (err, msg) => {
  if (err) return;
  let req;
  try {
    req = JSON.parse(dec.decode(msg.data));
  } catch {
    msg.respondError(400, "send JSON like {\"sku\": \"apple\", \"qty\": 2}");
    return;
  }
  const have = stock.get(req.sku) ?? 0;
  if (!(Number.isInteger(req.qty) && req.qty > 0)) {
    msg.respondError(400, "qty must be a positive integer");
  } else if (req.qty > have) {
    msg.respondError(409, `not enough stock: ${have} ${req.sku} left`);
  } else {
    stock.set(req.sku, have - req.qty);
    msg.respond(json({ sku: req.sku, reserved: req.qty, left: have - req.qty, served_by: "node" }));
  }
});

await nc.flush(); // the server has every subscription now: discovery and the endpoints answer
console.log(JSON.stringify({ ready: true, id: service.info().id, name, version }));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await service.stop();
    await nc.drain();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// The connection closing for good (server gone past the reconnect attempts) ends the process too.
nc.closed().then(() => {
  if (!stopping) process.exit(1);
});
