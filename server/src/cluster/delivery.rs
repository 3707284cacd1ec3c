//! The delivery task: reads the bus and hands each room event to this
//! node's members, in each room's order, and repairs the order when
//! events were missed.
//!
//! Redis publishes in the order its scripts ran, so on one subscription
//! the events of a room arrive numbered 1, 2, 3, … . Events go missing
//! only when the subscription is lost (a network blip, `CLIENT KILL`, an
//! output buffer overflow in Redis). Then the task subscribes again and
//! fetches, for every room it follows, what it missed from the room's
//! kept events; a gap seen on the bus itself is repaired the same way. A
//! room whose missing events are no longer kept cannot be repaired: its
//! local members are closed with 1013, to reconnect and recover with
//! `since` — no member ever sees a gap it is not told about.

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::{Either, select};
use futures::{FutureExt, StreamExt};
use natter_runtime::redis::Msg;
use natter_runtime::redis::aio::{MultiplexedConnection, PubSubStream};

use super::bus::{self, BUS};
use super::local::Applied;
use super::node::Cluster;
use super::scripts::{BrokerError, Repair};

impl Cluster {
    /// Delivers the bus until the subscription is lost and cannot be made
    /// again; returns why.
    pub(super) async fn deliver(
        &self,
        mut events: PubSubStream,
        mut conn: MultiplexedConnection,
    ) -> BrokerError {
        // Events handed over per lock hold: what a reader may queue before
        // it waits (a quarter of --queue; see `crate::backlog`).
        let chunk = (self.config.queue / 4).max(1);
        loop {
            let next = {
                let event = pin!(events.next());
                let resync = pin!(self.resync.1.recv());
                match select(event, resync).await {
                    Either::Left((event, _)) => Either::Left(event),
                    Either::Right((room, _)) => Either::Right(room),
                }
            };
            let result = match next {
                Either::Left(Some(first)) => {
                    let mut batch = vec![first];
                    while batch.len() < chunk {
                        match events.next().now_or_never() {
                            Some(Some(more)) => batch.push(more),
                            _ => break,
                        }
                    }
                    // Let the writers catch up first, as a reader does
                    // before each request (guarantee 4).
                    self.backlog.wait_clear().await;
                    self.apply_batch(&batch, &mut conn).await
                }
                Either::Left(None) => match self.resubscribe(&mut conn).await {
                    Ok(again) => {
                        events = again;
                        Ok(())
                    }
                    Err(e) => return e,
                },
                // The heartbeat found the bus quiet: subscribe again.
                Either::Right(Ok(room)) if room.is_empty() => {
                    match self.resubscribe(&mut conn).await {
                        Ok(again) => {
                            events = again;
                            Ok(())
                        }
                        Err(e) => return e,
                    }
                }
                Either::Right(Ok(room)) => {
                    let position = self.local.lock().await.position(&room);
                    match position {
                        Some((epoch, after)) => self.repair(&room, &epoch, after, &mut conn).await,
                        None => Ok(()),
                    }
                }
                // The sender lives in `self`: cannot happen.
                Either::Right(Err(_)) => Ok(()),
            };
            if let Err(e) = result {
                return e;
            }
        }
    }

    /// Applies bus messages in order under one lock hold, then repairs the
    /// rooms in which a gap showed.
    async fn apply_batch(
        &self,
        batch: &[Msg],
        conn: &mut MultiplexedConnection,
    ) -> Result<(), BrokerError> {
        let mut gaps = BTreeSet::new();
        {
            let mut locked = self.locked().await;
            let (local, mut post) = locked.parts();
            for message in batch {
                let Some(event) = bus::parse(message.get_payload_bytes()) else {
                    log::warn!("ignoring a malformed message on {BUS}");
                    continue;
                };
                match local.apply(&mut post, &event, &self.config.node) {
                    Applied::Gap { after } => {
                        let (room, epoch) = (Arc::<str>::from(event.room), event.epoch);
                        gaps.insert((room, Arc::<str>::from(epoch), after));
                    }
                    Applied::Lost => {
                        let closed = local.lose_room(event.room);
                        log::warn!(
                            "room {}: forgotten and created again while {closed} member(s) here were in it; closed with 1013",
                            event.room
                        );
                    }
                    Applied::Delivered | Applied::Skipped => {}
                }
            }
        }
        let mut repaired = BTreeSet::new();
        for (room, epoch, after) in gaps {
            // A later event of the same room saw the same gap.
            if repaired.insert(room.clone()) {
                log::info!("room {room}: events after {after} missed on the bus; repairing");
                self.repair(&room, &epoch, after, conn).await?;
            }
        }
        Ok(())
    }

    /// Subscribes again after the subscription was lost, then repairs
    /// every room followed here.
    async fn resubscribe(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<PubSubStream, BrokerError> {
        log::warn!("lost the bus subscription; subscribing again");
        let events = self.subscribe().await?;
        // Before looking at which rooms to repair: a request that started
        // its script before this sees the change and asks for its room.
        self.generation.fetch_add(1, Ordering::SeqCst);
        let to_check = self.local.lock().await.to_check();
        for (room, epoch, after) in to_check {
            self.repair(&room, &epoch, after, conn).await?;
        }
        Ok(events)
    }

    /// Delivers a room's events after `after` (of incarnation `epoch`)
    /// from the broker's kept events; closes its local members with 1013
    /// when they are gone.
    async fn repair(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), BrokerError> {
        let answer = self.checked(self.scripts.repair(conn, room, epoch, after).await)?;
        let mut locked = self.locked().await;
        let (local, mut post) = locked.parts();
        if let Repair::Events(payloads) = answer {
            let mut whole = true;
            for payload in &payloads {
                let applied = match bus::parse(payload) {
                    Some(event) => local.apply(&mut post, &event, &self.config.node),
                    None => Applied::Lost,
                };
                whole &= matches!(applied, Applied::Delivered | Applied::Skipped);
            }
            if whole {
                return Ok(());
            }
        }
        let closed = local.lose_room(room);
        log::warn!(
            "room {room}: missed events are no longer kept; {closed} member(s) here closed with 1013 to recover with since"
        );
        Ok(())
    }
}
