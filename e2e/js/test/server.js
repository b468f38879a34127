// Starts the project's conformance server on a free loopback port and stops
// it when the test ends. FAWKES_SERVER_BIN overrides the binary's path.
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.FAWKES_SERVER_BIN || path.resolve(here, "../../../target/debug/conformance-server");

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts a server with `env`; resolves with {url, stop, interrupt}. */
export async function startServer(t, env = {}) {
  const port = await freePort();
  const child = spawn(BIN, [], { env: { ...process.env, PORT: String(port), ...env }, stdio: ["ignore", "ignore", "inherit"] });
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  t.after(stop);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`server did not start: ${BIN}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // a graceful stop, as Ctrl-C: the server leaves its cluster and closes its sockets
  const interrupt = () => child.kill("SIGINT");
  return { url, stop, interrupt };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once cond() is true; rejects after timeout. */
export async function until(cond, timeout = 5000, what = "condition") {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
