//! A node's life in its cluster: connect and register, serve while the
//! broker is reachable and the lease holds, and when either fails, close
//! every connection with 1013, refuse upgrades, and try again until the
//! broker is back.
//!
//! The lease: a key whose time to live is four fifths of `--node-timeout`,
//! renewed every fifth of it, so a renewal may come three fifths late (a
//! busy machine) before the lease lapses. Each renewal also reaps the nodes
//! whose lease lapsed, so a dead node's members leave within
//! `--node-timeout`: at most four fifths for its lease to lapse, one fifth
//! until someone looks.

use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_lock::Mutex;

use futures::future::{Either, select};
use natter_runtime::redis::io::tcp::{TcpSettings, socket2};
use natter_runtime::redis::{
    self, IntoConnectionInfo,
    aio::{MultiplexedConnection, PubSubStream},
};
use natter_runtime::{sleep, timeout};

use super::bus::BUS;
use super::node::{BrokerStartError, CONNECT_TIMEOUT, Cluster, ClusterConfig, Link};
use super::scripts::{Bounds, BrokerError, Renewed, Scripts};
use crate::backlog::Backlog;
use crate::shutdown::Shutdown;

use super::local::Local;

/// How long a node waits between attempts while the broker is lost.
const RETRY: Duration = Duration::from_secs(1);

impl Cluster {
    /// Connects to the broker and registers this node: the server starts
    /// only once it can serve, and serves from the moment this returns.
    pub(crate) async fn start(
        config: ClusterConfig,
        backlog: Arc<Backlog>,
    ) -> Result<Cluster, BrokerStartError> {
        let bad_url = |e: redis::RedisError| BrokerStartError::Url {
            url: config.url.clone(),
            reason: e.to_string(),
        };
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(bad_url)?;
        let client = redis::Client::open(info.set_tcp_settings(tcp_settings())).map_err(bad_url)?;
        let cluster = Cluster {
            bounds: Bounds {
                // Redis's list indexes are 64-bit; no history is that long.
                history: config.history.min(1 << 40),
                max_rooms: config.max_rooms.min(1 << 40),
            },
            client,
            scripts: Scripts::new(),
            token: format!("{:016x}", fastrand::u64(..)),
            epoch_prefix: format!("{:08x}", fastrand::u32(..)),
            link: RwLock::new(None),
            local: Mutex::new(Local::default()),
            generation: AtomicU64::new(0),
            markers: AtomicU64::new(1),
            resync: async_channel::unbounded(),
            trouble: event_listener::Event::new(),
            first: std::sync::Mutex::new(None),
            backlog,
            config,
        };
        let link = cluster
            .link_up()
            .await
            .map_err(|e| BrokerStartError::Unreachable {
                url: cluster.config.url.clone(),
                reason: e.to_string(),
            })?;
        cluster.go_live(&link.conn);
        *cluster.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
        log::info!(
            "node {} joined the cluster at {}",
            cluster.config.node,
            cluster.config.url
        );
        Ok(cluster)
    }

    /// Connects, subscribes to the bus, reaps whatever an earlier life of
    /// this node left (its members leave their rooms now, once), then takes
    /// the lease for this life. Subscribed first, so no event after the
    /// registration is missed.
    pub(super) async fn link_up(&self) -> Result<Link, BrokerError> {
        let config = Cluster::connection_config();
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let events = self.subscribe().await?;
        let node = &self.config.node;
        let reaped = self
            .scripts
            .reap_node(&mut conn, node, &self.bounds, false)
            .await?;
        if reaped > 0 {
            log::info!("node {node}: {reaped} membership(s) left from before were ended");
        }
        let lease = millis(self.lease());
        self.scripts
            .register(&mut conn, node, &self.token, lease)
            .await?;
        Ok(Link { conn, events })
    }

    /// A fresh subscription to the bus.
    pub(super) async fn subscribe(&self) -> Result<PubSubStream, BrokerError> {
        let subscribed = timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(BUS).await?;
            Ok::<_, BrokerError>(pubsub.into_on_message())
        })
        .await;
        subscribed.unwrap_or_else(|| Err(BrokerError::Down("subscribing timed out".into())))
    }

    /// Serves through the broker until `stopped`, riding out its losses.
    /// Returns why the node must stop serving for good, if it must: another
    /// process took over its `--node-id`.
    pub(crate) async fn run(&self, stopped: &Shutdown) -> Option<String> {
        let mut link = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        loop {
            let Link { conn, events } = match link.take() {
                Some(link) => link,
                None => {
                    let again = self.reconnect(stopped).await?;
                    log::info!("the broker is back: node {} serves again", self.config.node);
                    self.go_live(&again.conn);
                    again
                }
            };
            let why = {
                let serving = pin!(self.serve(events, conn));
                let stop = pin!(stopped.wait());
                match select(serving, stop).await {
                    Either::Left((why, _)) => why,
                    Either::Right(((), _)) => return None,
                }
            };
            self.go_dark();
            let closed = self.local.lock().await.lose_all();
            if let BrokerError::TakenOver = why {
                let node = &self.config.node;
                log::error!(
                    "another process took over node id {node} in the broker: {closed} connection(s) closed with 1013; this one stops"
                );
                return Some(format!("another process took over node id {node}"));
            }
            log::warn!(
                "lost the broker ({why}): {closed} connection(s) closed with 1013; refusing upgrades until it is back"
            );
        }
    }

    /// Serving begins: upgrades are accepted and requests reach the broker.
    fn go_live(&self, conn: &MultiplexedConnection) {
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
    }

    /// Serving stops: upgrades get 503 and requests fail at once.
    fn go_dark(&self) {
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// One connected period: delivery, the lease, the bus's heartbeat and
    /// the requests' alarms, until one of them finds the broker gone.
    async fn serve(&self, events: PubSubStream, conn: MultiplexedConnection) -> BrokerError {
        let delivering = pin!(self.deliver(events, conn.clone()));
        let leasing = pin!(self.keep_lease(conn));
        let beating = pin!(self.heartbeat());
        let alarmed = pin!(async {
            self.trouble.listen().await;
            BrokerError::Down(
                "a request found the broker unreachable or this node's lease gone".into(),
            )
        });
        let first = select(select(delivering, leasing), select(beating, alarmed)).await;
        match first {
            Either::Left((Either::Left((why, _)) | Either::Right((why, _)), _))
            | Either::Right((Either::Left((why, _)) | Either::Right((why, _)), _)) => why,
        }
    }

    /// Renews the lease and reaps dead nodes, every fifth of
    /// `--node-timeout`, until that fails.
    async fn keep_lease(&self, mut conn: MultiplexedConnection) -> BrokerError {
        let every = self.config.node_timeout / 5;
        let lease = millis(self.lease());
        let node = &self.config.node;
        loop {
            sleep(every).await;
            let renewed = timeout(
                every,
                self.scripts.renew(&mut conn, node, &self.token, lease),
            );
            match renewed.await {
                None => return BrokerError::Down("renewing the lease timed out".into()),
                Some(Err(e)) => return e,
                Some(Ok(Renewed::Expired)) => return BrokerError::NoLease,
                Some(Ok(Renewed::TakenOver)) => return BrokerError::TakenOver,
                Some(Ok(Renewed::Yes)) => {}
            }
            let dead = match self.scripts.dead_nodes(&mut conn).await {
                Ok(dead) => dead,
                Err(e) => return e,
            };
            for gone in dead {
                match self
                    .scripts
                    .reap_node(&mut conn, &gone, &self.bounds, true)
                    .await
                {
                    Ok(ended) => log::info!(
                        "node {gone} stopped renewing its lease: reaped, {ended} membership(s) ended"
                    ),
                    // Another node reaping it at the same time is fine;
                    // only an unreachable broker ends the session.
                    Err(e @ BrokerError::Down(_)) => return e,
                    Err(e) => log::warn!("reaping node {gone}: {e}"),
                }
            }
        }
    }

    /// Every `--node-timeout`, sends a marker round the bus: a subscription
    /// that went quiet without its connection failing (a proxy or NAT that
    /// dropped it) is made again (and the rooms repaired) rather than
    /// leave this node's members hearing nothing.
    async fn heartbeat(&self) -> BrokerError {
        let every = self.config.node_timeout;
        loop {
            sleep(every).await;
            if timeout(every, self.flush()).await.is_none() {
                log::warn!("no heartbeat over the bus for {every:?}; subscribing again");
                // The empty room asks the delivery task to subscribe again.
                let _ = self.resync.0.try_send(std::sync::Arc::from(""));
            }
        }
    }

    /// Tries to connect again, once a second, until it works or `stopped`.
    async fn reconnect(&self, stopped: &Shutdown) -> Option<Link> {
        let mut said = false;
        loop {
            let attempt = pin!(async {
                sleep(RETRY).await;
                self.link_up().await
            });
            let stop = pin!(stopped.wait());
            match select(attempt, stop).await {
                Either::Left((Ok(link), _)) => return Some(link),
                Either::Left((Err(e), _)) => {
                    if !said {
                        log::info!("broker still unreachable ({e}); retrying every {RETRY:?}");
                        said = true;
                    }
                }
                Either::Right(((), _)) => return None,
            }
        }
    }

    /// Leaves the cluster at a graceful shutdown: the node reaps itself
    /// and gives up its lease, so nobody waits for it to lapse.
    pub(crate) async fn leave_cluster(&self) {
        let Ok(mut conn) = self.link() else {
            return;
        };
        let node = &self.config.node;
        let reaped = self
            .scripts
            .reap_node(&mut conn, node, &self.bounds, false)
            .await;
        let released: Result<i64, _> = redis::cmd("DEL")
            .arg(format!("natter:lease:{node}"))
            .query_async(&mut conn)
            .await;
        match (reaped, released) {
            (Ok(_), Ok(_)) => log::debug!("node {node} left the cluster"),
            (Err(e), _) => log::warn!("could not leave the cluster cleanly: {e}"),
            (_, Err(e)) => log::warn!("could not give up the lease: {e}"),
        }
    }

    /// The lease's time to live: four fifths of `--node-timeout`.
    fn lease(&self) -> Duration {
        self.config.node_timeout * 4 / 5
    }
}

/// TCP settings for the broker's connections: no Nagle delay (a say waits
/// for its reply), and keepalive probes, so a connection that a network
/// device dropped silently fails within about half a minute instead of
/// leaving a quiet subscription hanging.
fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
