// Errors show where they happen: the nick asked for is taken (a guest nick
// and the reason), a rename refused, a text over the server's limit, a
// leave of a room one is not in, a bad room name, a whisper to nobody.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openChat, runCleanups, line, say, connected,
} from './lib.mjs';

test('errors are shown by the control that caused them', { timeout: 90_000 }, async () => {
  const cleanup = [];
  try {
    const server = await startServer(cleanup, { args: ['--max-text-bytes', '20'] });
    const browser = await launchBrowser(cleanup);
    const alice = await openChat(browser, server, { nick: 'alice', room: 'lobby' });

    // A second page asks for "alice": it gets in as a guest, told why.
    const guest = await openChat(browser, server, { nick: 'alice', room: 'lobby', expectNick: 'guest-1' });
    const nickError = guest.locator('#nick-error');
    await nickError.waitFor();
    assert.match(await nickError.textContent(), /alice is taken; you are guest-1/);
    await line(alice, 'lobby', 'guest-1 joined', 'presence').waitFor();

    // Renaming to a taken nick (any case) is refused, by the rename form.
    await guest.fill('#nick-input', 'ALICE');
    await guest.press('#nick-input', 'Enter');
    await guest.locator('#nick-error', { hasText: 'that nick is taken' }).waitFor();
    await connected(guest, 'guest-1');
    // An invalid nick too, with the server's own message.
    await guest.fill('#nick-input', 'no spaces');
    await guest.press('#nick-input', 'Enter');
    await guest.locator('#nick-error', { hasText: 'a nick is 1-32 characters' }).waitFor();
    // A good one works, and the others see the rename.
    await guest.fill('#nick-input', 'carol');
    await guest.press('#nick-input', 'Enter');
    await connected(guest, 'carol');
    await guest.locator('#nick-error').waitFor({ state: 'hidden' });
    await line(alice, 'lobby', 'guest-1 is now carol', 'presence').waitFor();

    // The limit from the welcome is shown, and a text over it gets the
    // server's text_too_long message under the message box; the text stays
    // there to be fixed.
    await guest.locator('#say-count', { hasText: '0/20' }).waitFor();
    const long = 'this text is longer than twenty bytes';
    await guest.fill('#say-input', long);
    await guest.locator('#say-count.over', { hasText: `${long.length}/20` }).waitFor();
    await guest.press('#say-input', 'Enter');
    await guest.locator('#say-error', { hasText: `text is ${long.length} bytes; the limit is 20` }).waitFor();
    assert.equal(await guest.inputValue('#say-input'), long);
    assert.equal(await line(alice, 'lobby', 'this text is longer').count(), 0);
    // A short one goes through and clears the error.
    await say(guest, 'short one');
    await line(alice, 'lobby', 'short one', 'message').waitFor();
    await guest.locator('#say-error').waitFor({ state: 'hidden' });

    // Not a member: leaving a room one is not in.
    await say(guest, '/leave elsewhere');
    await guest.locator('#say-error', { hasText: "you are not in room 'elsewhere'" }).waitFor();

    // A bad room name, in the join form.
    await guest.fill('#join-room', 'Bad Room');
    await guest.press('#join-room', 'Enter');
    await guest.locator('#join-error', { hasText: 'a room is 1-64 characters' }).waitFor();
    assert.equal(await guest.locator('#room-tabs button').count(), 1);

    // A whisper to a nick nobody has, in the whisper form.
    await guest.click('#whisper-panel summary');
    await guest.fill('#whisper-to', 'ghost');
    await guest.fill('#whisper-text', 'hello?');
    await guest.press('#whisper-text', 'Enter');
    await guest.locator('#whisper-error', { hasText: "nobody is called 'ghost'" }).waitFor();

    // An unknown command is answered locally.
    await say(guest, '/frobnicate');
    await guest.locator('#say-error', { hasText: 'unknown command /frobnicate' }).waitFor();
  } finally {
    await runCleanups(cleanup);
  }
});
