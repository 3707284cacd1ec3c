// The pages reconnect by themselves and recover what was said while they
// were away: with --data-dir the history is complete (no "missed" notice);
// after a restart without it (a new epoch) they say they may have missed
// messages.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  startServer, startCli, launchBrowser, openChat, runCleanups, tempDir, line, log, say, connected, none,
} from './lib.mjs';

/** Waits until the page shows that it lost the server (shutdown or reconnecting). */
async function lostServer(page) {
  await page.locator('#connection[data-state="reconnecting"], #connection[data-state="shutdown"]').waitFor();
}

test('pages reconnect after restarts and recover the history (--data-dir), or say what they missed', { timeout: 90_000 }, async () => {
  const cleanup = [];
  try {
    const dataDir = join(tempDir(cleanup), 'data');
    let server = await startServer(cleanup, { args: ['--data-dir', dataDir] });
    const port = server.port;
    const browser = await launchBrowser(cleanup);
    const alice = await openChat(browser, server, { nick: 'alice', room: 'lobby' });
    const bob = await openChat(browser, server, { nick: 'bob', room: 'lobby' });
    await say(alice, 'before the restart');
    await line(bob, 'lobby', 'before the restart', 'message').waitFor();

    // Stop the server (SIGTERM: a graceful shutdown). Both pages show it.
    assert.equal(await server.stop(), 0);
    await lostServer(alice);
    await lostServer(bob);

    // While the pages are away, a CLI client says something: on a server
    // of its own port over the same data directory, so the pages cannot
    // possibly be connected to hear it live.
    server = await startServer(cleanup, { args: ['--data-dir', dataDir] });
    const cli = startCli(cleanup, server.ws, 'cli', 'lobby');
    cli.say('said while you were away');
    assert.equal(await cli.end(), 0);
    assert.equal(await server.stop(), 0);

    // The server comes back on the pages' port: they reconnect by
    // themselves (no click), as the same nicks, and show the message once.
    server = await startServer(cleanup, { port, args: ['--data-dir', dataDir] });
    for (const [page, nick] of [[alice, 'alice'], [bob, 'bob']]) {
      await connected(page, nick, 30_000);
      await line(page, 'lobby', 'said while you were away', 'message').waitFor();
      assert.equal(await line(page, 'lobby', 'before the restart', 'message').count(), 1);
      await none(log(page, 'lobby').locator('.missed'), 'a "missed messages" notice after a complete recovery');
    }
    // They talk again, seq continuing.
    await say(bob, 'after the restart');
    await line(alice, 'lobby', 'after the restart', 'message').waitFor();
    const seqs = await log(alice, 'lobby').locator('.line.message').evaluateAll((ls) => ls.map((l) => Number(l.dataset.seq)));
    assert.deepEqual(seqs, [1, 2, 3]);

    // Restart WITHOUT --data-dir: the room's numbering starts again under
    // a new epoch, and the pages say they may have missed messages.
    assert.equal(await server.stop(), 0);
    await lostServer(alice);
    server = await startServer(cleanup, { port });
    for (const [page, nick] of [[alice, 'alice'], [bob, 'bob']]) {
      await connected(page, nick, 30_000);
      await line(page, 'lobby', 'you may have missed messages in #lobby', 'missed').waitFor();
    }
    // And the conversation goes on in the new numbering.
    await say(alice, 'new epoch');
    await line(bob, 'lobby', 'new epoch', 'message').waitFor();
    assert.equal(await line(bob, 'lobby', 'new epoch', 'message').getAttribute('data-seq'), '1');
  } finally {
    await runCleanups(cleanup);
  }
});
