// Helpers shared by the browser tests: real natter-server processes, the
// CLI client, headless Chromium (through playwright-core) and waiting.
//
// tests/browser/run.sh builds the binaries and passes their paths in
// NATTER_SERVER_BIN and NATTER_CLIENT_BIN, and where screenshots go in
// NATTER_BROWSER_OUT. Nothing here sleeps to wait for something: every wait
// polls a condition (or uses playwright's auto-waiting) up to a deadline.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests with bash tests/browser/run.sh`);
  return value;
};

export const SERVER_BIN = need('NATTER_SERVER_BIN');
export const CLIENT_BIN = need('NATTER_CLIENT_BIN');
export const OUT_DIR = need('NATTER_BROWSER_OUT');
export const CHROMIUM = process.env.NATTER_CHROMIUM || '/usr/bin/chromium';

// Every process a test starts, so that none outlives this one: a test that
// timed out may never reach its cleanup, and the runner may be stopped.
const children = new Set();
function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
process.once('exit', () => { for (const c of children) c.kill('SIGKILL'); });
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => { for (const c of children) c.kill('SIGKILL'); process.exit(1); });
}

/** How long any single wait in a test may take. */
export const WAIT_MS = 15_000;

/** A temporary directory, removed by `cleanup`. */
export function tempDir(cleanup, prefix = 'natter-browser-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the cleanups in reverse order, each even if another fails. */
export async function runCleanups(cleanup) {
  while (cleanup.length) {
    const fn = cleanup.pop();
    try { await fn(); } catch (e) { console.error('cleanup:', e); }
  }
}

/** Polls `check` (sync or async) until it returns a truthy value. */
export async function until(what, check, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Resolves with the exit code (or signal) of a child, or rejects after `timeout`. */
function exited(child, timeout) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode ?? child.signalCode);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pid ${child.pid} did not exit within ${timeout} ms`)), timeout);
    child.once('exit', (code, signal) => { clearTimeout(timer); resolve(code ?? signal); });
  });
}

/**
 * Starts natter-server on 127.0.0.1 (port 0 picks a free one) with extra
 * `args`, and resolves once it printed its `listening on` line.
 * `stop()` sends SIGTERM to its PID and waits for the exit (SIGKILL after 10 s).
 */
export async function startServer(cleanup, { port = 0, args = [] } = {}) {
  const child = track(spawn(SERVER_BIN, ['--listen', `127.0.0.1:${port}`, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  }));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const server = {
    child,
    get stderr() { return stderr; },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      try {
        return await exited(child, 10_000);
      } catch {
        child.kill('SIGKILL');
        return exited(child, 5_000);
      }
    },
  };
  cleanup.push(() => server.stop());
  const match = await until(`natter-server to listen (stderr: ${stderr.slice(-500)})`, () => {
    if (child.exitCode !== null) throw new Error(`natter-server exited with ${child.exitCode}: ${stderr}`);
    return stdout.match(/listening on (wss?):\/\/127\.0\.0\.1:(\d+)\/ws/);
  }, 20_000);
  const tls = match[1] === 'wss';
  server.port = Number(match[2]);
  server.http = `${tls ? 'https' : 'http'}://127.0.0.1:${server.port}/`;
  server.ws = `${match[1]}://127.0.0.1:${server.port}/ws`;
  return server;
}

/**
 * The CLI client, `natter chat URL --nick NICK --room ROOM`, with stdin
 * piped: `say(line)` sends a line, `waitFor(text)` waits for it on stdout,
 * `end()` closes stdin and resolves with the exit code.
 */
export function startCli(cleanup, url, nick, room) {
  const child = track(spawn(CLIENT_BIN, ['chat', url, '--nick', nick, '--room', room], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  }));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const cli = {
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    say(line) { child.stdin.write(`${line}\n`); },
    waitFor(text, timeout) {
      return until(`the CLI to print ${JSON.stringify(text)} (stdout: ${stdout.slice(-800)}; stderr: ${stderr.slice(-400)})`,
        () => stdout.includes(text), timeout);
    },
    async end() {
      child.stdin.end();
      return exited(child, WAIT_MS);
    },
  };
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited(child, 5_000).catch(() => child.kill('SIGKILL'));
    }
  });
  return cli;
}

/**
 * Headless Chromium, Debian's. `chromium.launch` gives every run a fresh
 * temporary profile (playwright passes its own --user-data-dir and removes
 * it on close), so nothing from an earlier run leaks in.
 */
export async function launchBrowser(cleanup) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  cleanup.push(() => browser.close());
  return browser;
}

/**
 * Opens the page served by `server` in a new browser context (its own
 * storage: a separate person), connects as `nick` into `room`, and waits
 * until the page says it is connected.
 */
export async function openChat(browser, server, { nick = '', room = 'lobby', viewport, expectNick, contextOptions } = {}) {
  const context = await browser.newContext({ viewport: viewport || { width: 1100, height: 700 }, ...contextOptions });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error (${nick}):`, e));
  // The WebSocket URLs the page opened, for tests to check.
  page.sockets = [];
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  await page.goto(server.http);
  await page.fill('#connect-nick', nick);
  await page.fill('#connect-room', room);
  await page.press('#connect-room', 'Enter');
  await connected(page, expectNick || nick);
  if (room) await line(page, room, `you joined #${room}`).waitFor();
  return page;
}

/** Waits until the page shows "connected as NICK". */
export async function connected(page, nick, timeout = WAIT_MS) {
  await page.locator('#connection[data-state="connected"] #status', { hasText: `connected as ${nick}` })
    .waitFor({ timeout });
}

/** The log of `room` on `page`. */
export const log = (page, room) => page.locator(`.log[data-room="${room}"]`);

/** A line of `room`'s log containing `text` (and of `kind`: message, presence, notice, whisper...). */
export function line(page, room, text, kind = '') {
  return log(page, room).locator(`.line${kind ? '.' + kind : ''}`, { hasText: text });
}

/** Types `text` in the message box and presses Enter, as a person would. */
export async function say(page, text) {
  const input = page.locator('#say-input');
  await input.fill(text);
  await input.press('Enter');
}

/** Fails with `message` unless `locator` matches nothing (now). */
export async function none(locator, message) {
  const n = await locator.count();
  if (n !== 0) throw new Error(`${message}: found ${n}`);
}

export function outPath(name) {
  mkdirSync(OUT_DIR, { recursive: true });
  return join(OUT_DIR, name);
}
