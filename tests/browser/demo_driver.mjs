#!/usr/bin/env node
// Drives the pushfleet demo page in Debian's headless Chromium, for end-to-end tests
// written in any language: the test starts this script, writes commands on its stdin
// and reads answers on its stdout, one JSON object per line.
//
//   node demo_driver.mjs --url http://127.0.0.1:8080/demo/ [--timeout-ms 20000]
//
// Out, each with a "kind":
//   {"kind":"ready","url":…}                      the page loaded (window.demo exists)
//   {"kind":"console","level":"error"|"pageerror","text":…}   whenever the page logs one
//   {"kind":"error","error":…}                    any failure; the driver then exits 1
// In, one command per line (an "id" field, if given, is echoed in the answer):
//   {"cmd":"state"}                  → {"kind":"state", …window.demo}
//   {"cmd":"screenshot","path":P}    → {"kind":"screenshot","path":P}  (full-page PNG)
//   {"cmd":"herald"}                 → {"kind":"herald","rows":N,"text":…}  fleet view,
//                                       once herald's table shows at least one edge
//   {"cmd":"ticker"}                 → {"kind":"ticker"}  back to the ticker view
// Closing stdin closes the browser and exits 0.

import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
// Chromium phones home (component updates, safe browsing lists, sync, field trials)
// unless told not to; on a closed network that is a flood of failing requests.
const CHROMIUM_ARGS = [
  "--no-sandbox", // root in a container: the setuid sandbox is unavailable
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const PROFILE_PREFIX = "pushfleet-chromium-";
const OWNER_FILE = "pushfleet-driver.pid";

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

// Playwright's messages carry a terminal-coloured call log: keep them plain.
function describe(error) {
  const text = String(error && error.message ? error.message : error);
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

function alive(pid) {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return e.code === "EPERM";
  }
  // A killed driver nobody has reaped yet still answers signal 0: a zombie is dead.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

// A driver killed outright (SIGKILL) cannot remove its profile, so each start sweeps
// the profiles whose driver is gone. One without an owner file may be another
// driver's in the making, so it goes only when it is a minute old and no Chromium
// holds it (Chromium keeps a SingletonLock link in a profile while it runs).
function sweepOrphanProfiles() {
  const exists = (path) => {
    try {
      lstatSync(path);
      return true;
    } catch {
      return false;
    }
  };
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(PROFILE_PREFIX)) continue;
    const dir = join(tmpdir(), name);
    const ownerFile = join(dir, OWNER_FILE);
    if (exists(ownerFile)) {
      if (alive(Number(readFileSync(ownerFile, "utf8")) || 0)) continue;
    } else if (Date.now() - statSync(dir).mtimeMs < 60000 || exists(join(dir, "SingletonLock"))) {
      continue;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function parseArgs(argv) {
  const args = { url: null, timeoutMs: 20000 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === "--url") { args.url = value; i++; }
    else if (argv[i] === "--timeout-ms") { args.timeoutMs = Number(value); i++; }
    else throw new Error(`unknown argument ${argv[i]} (expected --url URL [--timeout-ms N])`);
  }
  if (!args.url) throw new Error("--url is required");
  if (!(args.timeoutMs > 0)) throw new Error("--timeout-ms must be a positive number");
  return args;
}

let context = null;
let profileDir = null;
let shuttingDown = false;

// Closes the browser and removes its throwaway profile; then exits.
async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    if (context) await context.close();
  } catch {
    // the browser may already be gone; the profile is still ours to remove
  }
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  process.exit(code);
}

async function fail(error) {
  if (shuttingDown) return;
  emit({ kind: "error", error: describe(error) });
  await shutdown(1);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // Playwright refuses --user-data-dir in args: a persistent context on a fresh
  // temporary directory is the same thing, and nothing of a previous run leaks in.
  try {
    sweepOrphanProfiles();
  } catch {
    // best effort: another driver may be sweeping too
  }
  profileDir = mkdtempSync(join(tmpdir(), PROFILE_PREFIX));
  writeFileSync(join(profileDir, OWNER_FILE), String(process.pid));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
    timeout: args.timeoutMs,
  });
  context.setDefaultTimeout(args.timeoutMs);
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => {
    if (message.type() === "error" && !shuttingDown) emit({ kind: "console", level: "error", text: message.text() });
  });
  page.on("pageerror", (error) => {
    if (!shuttingDown) emit({ kind: "console", level: "pageerror", text: String(error) });
  });
  // The browser dying under us is a failure, not an end of input.
  context.on("close", () => { if (!shuttingDown) fail(new Error("the browser closed")); });

  await page.goto(args.url, { waitUntil: "load" });
  await page.waitForFunction(() => typeof window.demo === "object");
  emit({ kind: "ready", url: page.url() });

  const commands = {
    async state() {
      return { kind: "state", ...(await page.evaluate(() => window.demo)) };
    },
    async screenshot(command) {
      if (typeof command.path !== "string" || !command.path) throw new Error("screenshot needs a \"path\"");
      await page.screenshot({ path: command.path, fullPage: true });
      return { kind: "screenshot", path: command.path };
    },
    async herald() {
      await page.click('[data-testid="tab-herald"]');
      // Edge rows carry data-edge; the "no edges yet" placeholder does not.
      await page.waitForFunction(
        () => document.querySelectorAll('[data-testid="herald-edges"] tbody tr[data-edge]').length > 0,
      );
      return page.evaluate(() => {
        const table = document.querySelector('[data-testid="herald-edges"]');
        return { kind: "herald", rows: table.querySelectorAll("tbody tr[data-edge]").length, text: table.innerText };
      });
    },
    async ticker() {
      await page.click('[data-testid="tab-ticker"]');
      return { kind: "ticker" };
    },
  };

  // One command at a time, in order: answers come back in the order asked.
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let command;
    try {
      command = JSON.parse(line);
    } catch {
      throw new Error(`not JSON: ${line.slice(0, 200)}`);
    }
    const run = commands[command && command.cmd];
    if (!run) throw new Error(`unknown command ${JSON.stringify(command && command.cmd)}`);
    const answer = await run(command);
    if (command.id !== undefined) answer.id = command.id;
    emit(answer);
  }
  await shutdown(0); // stdin closed
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
main().catch(fail);
