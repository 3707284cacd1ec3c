//! Many nodes, one chat (`--broker`): this node's half of guarantee 8.
//!
//! Every node started with the same Redis serves one chat. What must be
//! decided once for everyone — a room's next seq, who holds a nick, who is
//! in a room — is decided inside Redis by one atomic script per request
//! ([`scripts`]); each room event the scripts decide is numbered in the
//! room's order and published on one bus channel ([`bus`]). Every node's
//! delivery task ([`delivery`]) reads the bus and hands each event to its
//! own members, in each room's order, repairing from the room's kept
//! events when it missed some. The node's connection tasks call the
//! [`Cluster`] methods of [`requests`] instead of the single-process
//! registry's: a request runs its script, then waits until this node has
//! delivered the event it caused, so a sender still hears its message
//! before its `ok`. What they all share is in [`node`]; this node's own
//! members and how far it delivered each room, in [`local`].
//!
//! ```text
//!  connection task ──script──▶ Redis ──PUBLISH natter:bus──▶ every node's
//!        ▲                      (seq, history,                delivery task
//!        └── wait for own event ◀── members, nicks)           ──▶ local queues
//! ```
//!
//! Liveness ([`session`]): each node holds a lease in Redis and renews it;
//! a node whose lease lapses is reaped by whichever node looks first (its
//! members leave every room, in each room's order, once). A node that
//! cannot reach Redis closes its connections with 1013 and refuses
//! upgrades until it can again.

mod bus;
mod delivery;
mod local;
mod node;
mod requests;
mod scripts;
mod session;

pub use node::BrokerStartError;
pub(crate) use node::{Cluster, ClusterConfig};
