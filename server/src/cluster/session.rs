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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_lock::Mutex;

use futures::future::{Either, select};
use natter_runtime::redis::{
    self,
    aio::{MultiplexedConnection, PubSubStream},
};
use natter_runtime::{sleep, timeout};

use super::bus::BUS;
use super::node::{
    BrokerStartError, CONNECT_TIMEOUT, Cluster, ClusterConfig, Link, RESPONSE_TIMEOUT,
};
use super::scripts::{Bounds, BrokerError, Scripts};
use crate::backlog::Backlog;
use crate::shutdown::Shutdown;

use super::local::Local;

/// How long a node waits between attempts while the broker is lost.
const RETRY: Duration = Duration::from_secs(1);

impl Cluster {
    /// Connects to the broker and registers this node: the server starts
    /// only once it can serve.
    pub(crate) async fn start(
        config: ClusterConfig,
        backlog: Arc<Backlog>,
    ) -> Result<Cluster, BrokerStartError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| BrokerStartError::Url {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
        let cluster = Cluster {
            bounds: Bounds {
                history: config.history,
                max_rooms: config.max_rooms,
            },
            client,
            scripts: Scripts::new(),
            epoch_prefix: format!("{:08x}", fastrand::u32(..)),
            link: RwLock::new(None),
            up: AtomicBool::new(false),
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
        *cluster.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
        log::info!(
            "node {} joined the cluster at {}",
            cluster.config.node,
            cluster.config.url
        );
        Ok(cluster)
    }

    /// Connects, subscribes to the bus, then registers (which reaps what an
    /// earlier life of this node left): subscribed first, so no event after
    /// the registration is missed.
    pub(super) async fn link_up(&self) -> Result<Link, BrokerError> {
        let config = Cluster::connection_config();
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let events = self.subscribe().await?;
        let lease = self.lease();
        let reaped = self
            .scripts
            .register(&mut conn, &self.config.node, millis(lease), &self.bounds)
            .await?;
        if reaped > 0 {
            log::info!(
                "node {}: {reaped} membership(s) left from before were ended",
                self.config.node
            );
        }
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
    pub(crate) async fn run(&self, stopped: &Shutdown) {
        let mut link = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        loop {
            let Some(Link { conn, events }) = link.take() else {
                match self.reconnect(stopped).await {
                    Some(again) => {
                        log::info!("the broker is back: node {} serves again", self.config.node);
                        link = Some(again);
                        continue;
                    }
                    None => return,
                }
            };
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
            self.up.store(true, Ordering::Release);
            let why = {
                let serving = pin!(self.serve(events, conn));
                let stop = pin!(stopped.wait());
                match select(serving, stop).await {
                    Either::Left((why, _)) => why,
                    Either::Right(((), _)) => return,
                }
            };
            self.up.store(false, Ordering::Release);
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = None;
            let closed = self.local.lock().await.lose_all();
            log::warn!(
                "lost the broker ({why}): {closed} connection(s) closed with 1013; refusing upgrades until it is back"
            );
        }
    }

    /// One connected period: delivery, the lease, and the requests'
    /// alarms, until one of them finds the broker gone.
    async fn serve(&self, events: PubSubStream, conn: MultiplexedConnection) -> BrokerError {
        let delivering = pin!(self.deliver(events, conn.clone()));
        let leasing = pin!(self.keep_lease(conn.clone()));
        let watching = pin!(self.watch(conn));
        match select(select(delivering, leasing), watching).await {
            Either::Left((Either::Left((why, _)) | Either::Right((why, _)), _)) => why,
            Either::Right((why, _)) => why,
        }
    }

    /// Checks each alarm a request raises (a command failed) with a lease
    /// renewal: one command timing out under load is not a lost broker.
    async fn watch(&self, mut conn: MultiplexedConnection) -> BrokerError {
        let lease = millis(self.lease());
        loop {
            self.trouble.listen().await;
            let renewed = timeout(
                RESPONSE_TIMEOUT,
                self.scripts.renew(&mut conn, &self.config.node, lease),
            );
            match renewed.await {
                Some(Ok(true)) => continue,
                Some(Ok(false)) => return BrokerError::NoLease,
                Some(Err(e)) => return e,
                None => return BrokerError::Down("no answer to a lease renewal".into()),
            }
        }
    }

    /// Renews the lease and reaps dead nodes, every fifth of
    /// `--node-timeout`, until that fails.
    async fn keep_lease(&self, mut conn: MultiplexedConnection) -> BrokerError {
        let every = self.config.node_timeout / 5;
        let lease = millis(self.lease());
        loop {
            sleep(every).await;
            let renewed = timeout(
                every,
                self.scripts.renew(&mut conn, &self.config.node, lease),
            );
            match renewed.await {
                None => return BrokerError::Down("renewing the lease timed out".into()),
                Some(Err(e)) => return e,
                Some(Ok(false)) => return BrokerError::NoLease,
                Some(Ok(true)) => {}
            }
            match self.scripts.reap_dead(&mut conn, &self.bounds).await {
                Ok(reaped) => {
                    for (node, ended) in reaped {
                        log::info!(
                            "node {node} stopped renewing its lease: reaped, {ended} membership(s) ended"
                        );
                    }
                }
                Err(e) => return e,
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

    /// Leaves the cluster at a graceful shutdown: the node reaps itself,
    /// so nobody waits for its lease to lapse.
    pub(crate) async fn leave_cluster(&self) {
        let Ok(mut conn) = self.link() else {
            return;
        };
        match self
            .scripts
            .leave_cluster(&mut conn, &self.config.node, &self.bounds)
            .await
        {
            Ok(_) => log::debug!("node {} left the cluster", self.config.node),
            Err(e) => log::warn!("could not leave the cluster cleanly: {e}"),
        }
    }

    /// The lease's time to live: four fifths of `--node-timeout`.
    fn lease(&self) -> Duration {
        self.config.node_timeout * 4 / 5
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
