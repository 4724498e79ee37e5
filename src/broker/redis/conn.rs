//! Connections to Redis, standalone or Cluster, behind two small enums so the rest of the
//! broker does not care which: a reconnecting command connection, and pub/sub connections
//! that deliver RESP3 pushes (SUBSCRIBE on a standalone Redis, SSUBSCRIBE on a Cluster).

use std::time::Duration;

use redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig,
    MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, ProtocolVersion, RedisFuture, RedisResult, Value,
};

use crate::config::RedisConfig;

/// How to reach Redis.
#[derive(Clone)]
pub(crate) struct Connector {
    client: Option<redis::Client>,
    cluster_nodes: Vec<String>,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(config: &RedisConfig) -> RedisResult<Self> {
        let client = if config.cluster {
            None
        } else {
            Some(redis::Client::open(with_resp3(&config.url))?)
        };
        Ok(Connector {
            client,
            cluster_nodes: config.cluster_nodes.iter().map(|n| with_resp3(n)).collect(),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.client.is_none()
    }

    /// The command a publish uses: sharded pub/sub on a Cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn cluster_builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.cluster_nodes.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.command_timeout)
    }

    /// A connection for commands; it reconnects by itself after a loss.
    pub(crate) async fn commands(&self) -> RedisResult<CommandConn> {
        match &self.client {
            Some(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(CommandConn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            None => Ok(CommandConn::Cluster(
                self.cluster_builder()
                    .build()?
                    .get_async_connection()
                    .await?,
            )),
        }
    }

    /// A pub/sub connection whose pushes go to `sender`.
    pub(crate) async fn pubsub(&self, sender: impl AsyncPushSender) -> RedisResult<PubSubConn> {
        match &self.client {
            Some(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_push_sender(sender);
                Ok(PubSubConn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            None => Ok(PubSubConn::Cluster(
                self.cluster_builder()
                    .push_sender(sender)
                    .build()?
                    .get_async_connection()
                    .await?,
            )),
        }
    }
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// A command connection of either kind.
#[derive(Clone)]
pub(crate) enum CommandConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for CommandConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            CommandConn::Single(c) => c.req_packed_command(cmd),
            CommandConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            CommandConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            CommandConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            CommandConn::Single(c) => c.get_db(),
            CommandConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A pub/sub connection of either kind.
pub(crate) enum PubSubConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl PubSubConn {
    pub(crate) async fn subscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        if topics.is_empty() {
            return Ok(());
        }
        match self {
            PubSubConn::Single(c) => c.subscribe(topics).await,
            PubSubConn::Cluster(c) => {
                // Shard channels must be subscribed per slot: one command per topic.
                for topic in topics {
                    c.ssubscribe(topic).await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn unsubscribe(&mut self, topics: &[String]) -> RedisResult<()> {
        if topics.is_empty() {
            return Ok(());
        }
        match self {
            PubSubConn::Single(c) => c.unsubscribe(topics).await,
            PubSubConn::Cluster(c) => {
                for topic in topics {
                    c.sunsubscribe(topic).await?;
                }
                Ok(())
            }
        }
    }
}
