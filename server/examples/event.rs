//! Primer 8 — an event: waiters sleep until someone sets a flag.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def waiter(event, n):
//!     print(f"waiter {n} waiting")
//!     await event.wait()
//!     print(f"waiter {n} woke")
//!
//! async def setter(event):
//!     await asyncio.sleep(1)
//!     print("setter: set")
//!     event.set()
//!
//! async def main():
//!     event = asyncio.Event()
//!     await asyncio.gather(*(waiter(event, n) for n in (1, 2, 3)), setter(event))
//! ```
//!
//! Rust has no ready-made `asyncio.Event` in the crates natter uses, so this
//! builds one from two parts:
//!
//! * an `AtomicBool` — the flag itself, readable from any thread;
//! * an `event_listener::Event` — a list of parked listeners that `notify`
//!   wakes. It holds no state of its own: a notification sent while nobody is
//!   listening is simply gone.
//!
//! That last point is why `wait` uses the **check – listen – check** pattern.
//! The naive "if the flag is clear, start listening and await" has a race: the
//! setter can set the flag and notify *between* our check and our
//! `listen()`, and we would then sleep forever on a notification that already
//! happened (a "lost wake-up"). Registering the listener first and then
//! checking the flag again closes the gap: if the setter ran before the
//! listener existed, the second check sees the flag; if it runs after, the
//! notification reaches the listener. The setter's side is the mirror image:
//! store the flag first, then notify.
//!
//! Differences worth knowing:
//!
//! * Waiters may run on other threads at the same time as the setter (no
//!   GIL; asyncio's single-threaded loop cannot interleave `wait` with `set`),
//!   which is why the flag is atomic and the pattern above matters.
//! * `listener.await` is lazy like every future: creating the listener
//!   registers interest, awaiting it parks the task until notified.
//! * Dropping a waiting task (cancellation) drops its listener, which removes
//!   it from the list; no cleanup code needed.
//!
//! Run: `cargo run -p natter-server --example event`

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{say, secs};

/// asyncio.Event: a flag plus a way to wait for it to become true.
#[derive(Default)]
struct AsyncEvent {
    flag: AtomicBool,
    listeners: event_listener::Event,
}

impl AsyncEvent {
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sets the flag and wakes every waiter. Order matters: flag first, then
    /// notify, so a waiter woken by the notification sees the flag set.
    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.listeners.notify(usize::MAX);
    }

    /// Waits until the flag is set; returns at once if it already is.
    /// Returns whether it actually had to wait.
    async fn wait(&self) -> bool {
        let mut waited = false;
        loop {
            // 1. Check: the common fast path, no registration needed.
            if self.is_set() {
                return waited;
            }
            // 2. Listen: from here on, any notify() reaches this listener.
            let listener = self.listeners.listen();
            // 3. Check again: set() may have run between 1 and 2, in which
            //    case its notification went to nobody and we must not sleep.
            if self.is_set() {
                return waited;
            }
            // Parked until notified. Loop and re-check afterwards rather than
            // assuming: this also copes with a clear() between notify and wake.
            listener.await;
            waited = true;
        }
    }
}

async fn waiter(n: usize, event: Arc<AsyncEvent>) {
    say!("waiter {n} waiting");
    if event.wait().await {
        say!("waiter {n} woke");
    } else {
        say!("waiter {n} woke (flag was already set, no wait)");
    }
}

fn main() {
    common::start("event: waiters wake when the setter sets the flag");
    natter_runtime::block_on(async {
        let event = Arc::new(AsyncEvent::default());
        let waiters: Vec<_> = (1..=3)
            .map(|n| natter_runtime::spawn(waiter(n, event.clone())))
            .collect();

        let setter_event = event.clone();
        let setter = natter_runtime::spawn(async move {
            say!("setter: sleeping 1s before setting");
            natter_runtime::sleep(secs(1.0)).await;
            // Print before set(): once set, waiters on other threads may
            // print "woke" immediately.
            say!("setter: set");
            setter_event.set();
        });

        setter.await;
        futures::future::join_all(waiters).await;

        // A latecomer arriving after set() returns immediately: the flag
        // remembers, unlike a bare notification.
        waiter(4, event).await;
    });
    common::finish();
}
