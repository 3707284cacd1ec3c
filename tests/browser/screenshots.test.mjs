// Screenshots for a person to look at: a two-room conversation on a desktop
// viewport (two-rooms.png) and the page on a phone-sized one (phone.png),
// written to target/browser/ (under CARGO_TARGET_DIR when that is set).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import {
  startServer, startCli, launchBrowser, openChat, runCleanups, line, say, outPath,
} from './lib.mjs';

test('screenshots of a two-room conversation (desktop) and of a phone-sized page', { timeout: 90_000 }, async () => {
  const cleanup = [];
  try {
    const server = await startServer(cleanup);
    const browser = await launchBrowser(cleanup);
    const alice = await openChat(browser, server, { nick: 'alice', room: 'lobby', viewport: { width: 1280, height: 800 } });
    const bob = await openChat(browser, server, { nick: 'bob', room: 'lobby' });
    const cli = startCli(cleanup, server.ws, 'dana', 'lobby');
    await line(alice, 'lobby', 'dana joined').waitFor();

    cli.say('morning all, the build is green again');
    await line(alice, 'lobby', 'the build is green').waitFor();
    await say(bob, 'nice! was it the flaky shutdown test?');
    await line(alice, 'lobby', 'flaky shutdown').waitFor();
    await say(alice, 'yes: the grace period was too short on the CI machine');

    // A second room with its own talk; alice reads #lobby meanwhile, so
    // #rust collects unread messages.
    await say(alice, '/join rust');
    await line(alice, 'rust', 'you joined #rust').waitFor();
    await say(bob, '/join rust');
    await line(bob, 'rust', 'you joined #rust').waitFor();
    await line(alice, 'rust', 'bob joined').waitFor();
    await alice.click('#room-tabs button[data-room="lobby"]');
    await say(bob, 'has anyone tried the smol build on arm64?');
    await say(bob, 'it passes here, 2 cores');
    await alice.locator('#room-tabs button[data-room="rust"] .unread', { hasText: '2' }).waitFor();
    await say(bob, '/msg alice lunch at one?');
    await line(alice, 'lobby', 'lunch at one?', 'whisper').waitFor();
    cli.say('I will look at the fanout numbers after lunch');
    await line(alice, 'lobby', 'fanout numbers').waitFor();
    await alice.fill('#say-input', 'sounds good');

    const desktop = outPath('two-rooms.png');
    await alice.screenshot({ path: desktop });
    assert.ok(statSync(desktop).size > 10_000, `${desktop} is too small to show anything`);

    // A phone: 375×700, in #rust after reading it.
    const phone = await openChat(browser, server, { nick: 'erin', room: 'rust', viewport: { width: 375, height: 700 } });
    await line(phone, 'rust', 'it passes here').waitFor();
    await say(bob, 'welcome erin');
    await line(phone, 'rust', 'welcome erin').waitFor();
    await phone.fill('#say-input', 'thanks!');
    // Nothing may stick out sideways on a phone.
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 375px screen`);
    const phonePath = outPath('phone.png');
    await phone.screenshot({ path: phonePath });
    assert.ok(statSync(phonePath).size > 5_000, `${phonePath} is too small to show anything`);
    assert.equal(await cli.end(), 0);
  } finally {
    await runCleanups(cleanup);
  }
});
