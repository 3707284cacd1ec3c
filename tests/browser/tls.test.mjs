// Over TLS (--tls-cert/--tls-key) the page is served over https:// and
// talks to wss:// on the same origin, with nothing else changed. The
// certificate is a throw-away self-signed one made with openssl; the
// browser contexts are told to accept it (ignoreHTTPSErrors), as a person
// would after checking it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  startServer, launchBrowser, openChat, runCleanups, tempDir, line, say,
} from './lib.mjs';

test('over TLS the page is https:// and chats over wss://', { timeout: 60_000 }, async () => {
  const cleanup = [];
  try {
    const dir = tempDir(cleanup);
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      throw new Error(`openssl could not make a test certificate (install Debian's openssl): ${e.stderr || e.message}`);
    }
    const server = await startServer(cleanup, { args: ['--tls-cert', cert, '--tls-key', key] });
    assert.match(server.http, /^https:/);
    const browser = await launchBrowser(cleanup);
    const contextOptions = { ignoreHTTPSErrors: true };

    const alice = await openChat(browser, server, { nick: 'alice', room: 'lobby', contextOptions });
    const bob = await openChat(browser, server, { nick: 'bob', room: 'lobby', contextOptions });
    assert.equal(await alice.evaluate(() => location.protocol), 'https:');
    // The page's socket is wss:// on its own host and port.
    assert.deepEqual(alice.sockets, [`wss://127.0.0.1:${server.port}/ws?nick=alice`]);

    await line(alice, 'lobby', 'bob joined', 'presence').waitFor();
    await say(alice, 'hello over TLS');
    await line(bob, 'lobby', 'hello over TLS', 'message').waitFor();
    await say(bob, 'and back');
    await line(alice, 'lobby', 'and back', 'message').waitFor();
  } finally {
    await runCleanups(cleanup);
  }
});
