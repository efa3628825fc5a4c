//! This worker's side of a job split over processes: its shuffle server and a client per
//! peer, over Arrow Flight (the `flight` feature). Without the feature a job with a
//! [`Cluster`] is refused when it starts, and the types below have no values.

use sabot_core::arrow::datatypes::SchemaRef;
use sabot_shuffle::Delivery;
use sabot_shuffle::queue::FanInSender;

use crate::graph::Cluster;
use crate::{Result, RuntimeError};

pub(crate) use imp::{ControlSender, Network, RemoteSender};

/// Takes the control messages a peer sends this worker (checkpoint reports or
/// controls); an error goes back to the sender.
pub(crate) type ControlHandler =
    std::sync::Arc<dyn Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync>;

/// Channel `(exchange, upstream, downstream)`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "flight"), allow(dead_code))]
pub(crate) struct Channel {
    pub(crate) exchange: usize,
    pub(crate) upstream: usize,
    pub(crate) downstream: usize,
}

#[cfg(feature = "flight")]
mod imp {
    use super::*;
    use sabot_shuffle::flight::{ChannelId, ShuffleClient, ShuffleServer};

    pub(crate) use sabot_shuffle::flight::RemoteSender;

    /// Sends control messages (checkpoint reports and controls) to one peer worker.
    #[derive(Clone, Debug)]
    pub(crate) struct ControlSender(ShuffleClient);

    impl ControlSender {
        /// Sends `message` and waits for the peer to take it.
        pub(crate) fn send(&self, message: &[u8]) -> Result<()> {
            self.0.control(message).map_err(Into::into)
        }
    }

    fn id(c: Channel) -> ChannelId {
        ChannelId::new(c.exchange, c.upstream, c.downstream)
    }

    /// The shuffle server and a client per peer.
    pub(crate) struct Network {
        server: ShuffleServer,
        clients: Vec<Option<ShuffleClient>>,
    }

    impl std::fmt::Debug for Network {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Network")
                .field("addr", &self.server.local_addr())
                .finish()
        }
    }

    impl Network {
        pub(crate) fn start(cluster: &Cluster) -> Result<Network> {
            let server = ShuffleServer::start(cluster.workers[cluster.me], cluster.flight.clone())?;
            let clients = cluster
                .workers
                .iter()
                .enumerate()
                .map(|(w, addr)| (w != cluster.me).then(|| server.client(*addr)))
                .collect();
            Ok(Network { server, clients })
        }

        /// Deliveries of the remote upstream `channel` go into `tx`, tagged `tag`.
        pub(crate) fn receive(
            &self,
            channel: Channel,
            schema: SchemaRef,
            tx: FanInSender<Delivery>,
            tag: usize,
        ) {
            self.server.register_tagged(id(channel), schema, tx, tag);
        }

        /// A sender into `channel`, whose downstream subtask runs on `worker`.
        pub(crate) fn send(
            &self,
            worker: usize,
            channel: Channel,
            schema: SchemaRef,
        ) -> Result<RemoteSender> {
            let client = self
                .clients
                .get(worker)
                .and_then(Option::as_ref)
                .ok_or_else(|| RuntimeError::InvalidGraph {
                    reason: format!("no network client for worker {worker}"),
                })?;
            Ok(client.open(id(channel), schema))
        }

        /// Hands the control messages peers send this worker to `handler`.
        pub(crate) fn on_control(&self, handler: ControlHandler) {
            self.server.on_control(handler);
        }

        /// A sender of control messages to `worker`.
        pub(crate) fn control_to(&self, worker: usize) -> Result<ControlSender> {
            self.clients
                .get(worker)
                .and_then(Option::clone)
                .map(ControlSender)
                .ok_or_else(|| RuntimeError::InvalidGraph {
                    reason: format!("no network client for worker {worker}"),
                })
        }

        /// Waits (up to `timeout`) for peers to finish reading from this worker.
        pub(crate) fn drain(&self, timeout: std::time::Duration) {
            self.server.drain(timeout);
        }

        /// Stops the server and the clients.
        pub(crate) fn stop(self) {
            drop(self.server);
            drop(self.clients);
        }
    }
}

#[cfg(not(feature = "flight"))]
mod imp {
    use super::*;
    use sabot_core::Message;
    use sabot_shuffle::ShuffleError;

    /// No network without the `flight` feature: never constructed.
    #[derive(Debug)]
    pub(crate) enum Network {}

    /// No remote channel without the `flight` feature: never constructed.
    #[derive(Debug)]
    pub(crate) enum RemoteSender {}

    /// No peer to send control messages to without the `flight` feature.
    #[derive(Clone, Debug)]
    pub(crate) enum ControlSender {}

    impl ControlSender {
        pub(crate) fn send(&self, _: &[u8]) -> Result<()> {
            match *self {}
        }
    }

    impl Network {
        pub(crate) fn start(_: &Cluster) -> Result<Network> {
            Err(RuntimeError::InvalidGraph {
                reason: "a job split over worker processes needs the network exchange: build sabot-runtime (or sabot) with the `flight` feature".into(),
            })
        }

        pub(crate) fn receive(&self, _: Channel, _: SchemaRef, _: FanInSender<Delivery>, _: usize) {
            match *self {}
        }

        pub(crate) fn send(&self, _: usize, _: Channel, _: SchemaRef) -> Result<RemoteSender> {
            match *self {}
        }

        pub(crate) fn drain(&self, _: std::time::Duration) {
            match *self {}
        }

        pub(crate) fn on_control(&self, _: ControlHandler) {
            match *self {}
        }

        pub(crate) fn control_to(&self, _: usize) -> Result<ControlSender> {
            match *self {}
        }

        pub(crate) fn stop(self) {
            match self {}
        }
    }

    impl RemoteSender {
        pub(crate) fn send(&mut self, _: Message) -> std::result::Result<(), ShuffleError> {
            match *self {}
        }

        pub(crate) fn finish(self) -> std::result::Result<(), ShuffleError> {
            match self {}
        }
    }
}

#[cfg(all(test, not(feature = "flight")))]
mod tests {
    #[test]
    fn a_cluster_job_without_the_flight_feature_is_refused_naming_it() {
        let cluster = Cluster::new(vec!["127.0.0.1:0".parse().unwrap()], 0);
        let e = super::Network::start(&cluster).unwrap_err().to_string();
        assert!(e.contains("`flight` feature"), "{e}");
    }

    use super::*;
}
