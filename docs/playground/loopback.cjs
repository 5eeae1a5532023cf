// Preload for Microsoft 365 Agents Playground: bind its server to 127.0.0.1 instead of every interface.
//
//   node -r ./docs/playground/loopback.cjs docs/playground/node_modules/@microsoft/m365agentsplayground/cli.js ...
//
// The Playground calls server.listen(port, callback) with no host, which listens on all interfaces; anyone who
// can reach the machine could then drive the bot (which runs with authentication disabled in `breakglass dev`)
// through it. This rewrites listen(port[, callback]) to listen({port, host: "127.0.0.1"}[, callback]); calls
// that already name a host, a path or an options object are left alone.
"use strict";

const net = require("net");

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function loopbackListen(...args) {
  const [first, second] = args;
  const numeric = typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first));
  if (numeric && (args.length === 1 || (args.length === 2 && typeof second === "function"))) {
    const rest = typeof second === "function" ? [second] : [];
    return listen.call(this, { port: Number(first), host: "127.0.0.1" }, ...rest);
  }
  return listen.apply(this, args);
};
