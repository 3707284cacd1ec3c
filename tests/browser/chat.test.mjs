// Two browser pages and the CLI client chat in one room: each sees the
// others' messages, presence shows, and a whisper reaches only its target.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startCli, launchBrowser, openChat, runCleanups, line, log, say, none, until,
} from './lib.mjs';

test('two pages and the CLI chat in #lobby; presence; a whisper reaches only its target', { timeout: 90_000 }, async () => {
  const cleanup = [];
  try {
    const server = await startServer(cleanup);
    const browser = await launchBrowser(cleanup);

    const alice = await openChat(browser, server, { nick: 'alice', room: 'lobby' });
    const bob = await openChat(browser, server, { nick: 'bob', room: 'lobby' });
    await line(alice, 'lobby', 'bob joined', 'presence').waitFor();

    // The page is served by the binary, with the page's own limits shown.
    await alice.locator('#say-count', { hasText: '0/4096' }).waitFor();

    const cli = startCli(cleanup, server.ws, 'cli', 'lobby');
    await line(alice, 'lobby', 'cli joined', 'presence').waitFor();
    await line(bob, 'lobby', 'cli joined', 'presence').waitFor();
    await alice.locator('#members li', { hasText: 'cli' }).waitFor();
    assert.deepEqual(await alice.locator('#members li').allTextContents(), ['alice', 'bob', 'cli']);

    // CLI → pages.
    cli.say('hello from the terminal');
    for (const page of [alice, bob]) {
      await line(page, 'lobby', 'hello from the terminal', 'message').waitFor();
    }
    // Page → page and CLI. Focus stays in the message box after sending.
    await say(alice, 'hello from alice <b>not bold</b>');
    await line(bob, 'lobby', 'hello from alice', 'message').waitFor();
    await cli.waitFor('#lobby <alice> hello from alice <b>not bold</b>');
    assert.equal(await alice.evaluate(() => document.activeElement.id), 'say-input');
    // Text is text: the markup arrived as characters, not as an element.
    await none(log(bob, 'lobby').locator('b'), 'user text was rendered as HTML');
    await say(bob, 'hi alice, bob here');
    await line(alice, 'lobby', 'hi alice, bob here', 'message').waitFor();
    await cli.waitFor('#lobby <bob> hi alice, bob here');

    // Each page shows its own message once (the echo), marked as its own.
    await until('alice to see her message once', async () =>
      (await line(alice, 'lobby', 'hello from alice', 'message.mine').count()) === 1);

    // A whisper from alice (the whisper form) to bob: bob sees it as
    // incoming; alice sees only her outgoing line; the CLI sees nothing.
    await alice.click('#whisper-panel summary');
    await alice.fill('#whisper-to', 'bob');
    await alice.fill('#whisper-text', 'psst, secret');
    await alice.press('#whisper-text', 'Enter');
    await line(bob, 'lobby', 'psst, secret', 'whisper.incoming').waitFor();
    assert.match(await line(bob, 'lobby', 'psst, secret', 'whisper').textContent(), /alice whispers:/);
    await line(alice, 'lobby', 'psst, secret', 'whisper.outgoing').waitFor();
    await none(line(alice, 'lobby', 'psst, secret', 'whisper.incoming'), 'the sender got its whisper back');
    // And /msg from the message box, bob back to alice.
    await say(bob, '/msg alice right back at you');
    await line(alice, 'lobby', 'right back at you', 'whisper.incoming').waitFor();

    // The CLI leaves (stdin closed: it exits 0); both pages see it go.
    cli.say('bye from the terminal');
    await line(bob, 'lobby', 'bye from the terminal', 'message').waitFor();
    assert.equal(await cli.end(), 0);
    assert.ok(!cli.stdout.includes('psst'), 'the CLI saw a whisper meant for bob');
    assert.ok(!cli.stdout.includes('right back'), 'the CLI saw a whisper meant for alice');
    await line(alice, 'lobby', 'cli left', 'presence').waitFor();
    await line(bob, 'lobby', 'cli left', 'presence').waitFor();

    // bob leaves with the Leave button: alice sees it, bob's room is gone.
    await bob.click('#leave-button');
    await line(alice, 'lobby', 'bob left', 'presence').waitFor();
    await bob.locator('#room-tabs button[data-room="lobby"]').waitFor({ state: 'detached' });
    assert.deepEqual(await alice.locator('#members li').allTextContents(), ['alice']);

    // A second room, and unread counts: bob joins #side (join form),
    // alice too (/join), alice switches back to #lobby, bob talks in #side.
    await bob.fill('#join-room', 'side');
    await bob.press('#join-room', 'Enter');
    await line(bob, 'side', 'you joined #side').waitFor();
    await say(alice, '/join side');
    await line(alice, 'side', 'you joined #side').waitFor();
    await line(bob, 'side', 'alice joined', 'presence').waitFor();
    await alice.click('#room-tabs button[data-room="lobby"]');
    await say(bob, 'one');
    await say(bob, 'two');
    await alice.locator('#room-tabs button[data-room="side"] .unread', { hasText: '2' }).waitFor();
    await alice.click('#room-tabs button[data-room="side"]');
    await line(alice, 'side', 'two', 'message').waitFor();
    await alice.locator('#room-tabs button[data-room="side"] .unread').waitFor({ state: 'hidden' });

    // The rooms list: #lobby with 1 member (alice), #side with 2.
    await alice.click('#server-rooms summary');
    await alice.locator('#rooms-list button[data-room="side"]', { hasText: '(2)' }).waitFor();
    await alice.locator('#rooms-list button[data-room="lobby"]', { hasText: '(1)' }).waitFor();
  } finally {
    await runCleanups(cleanup);
  }
});
