//! A thousand concurrent clients subscribe and receive every publication, in order.

mod support;

use serde_json::json;
use support::{Encoding, TestResult, TestServer, WsClient};

const CLIENTS: usize = 1000;
const MESSAGES: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_receive_everything() -> TestResult {
    // A thousand clients from one address (127.0.0.1) connect at once: lift the
    // per-address pending cap, which exists to stop exactly that from one real address.
    let server = TestServer::start("[server]\nmax_pending_connections_per_ip = 0\n").await?;
    let url = server.ws_url();
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel::<()>(CLIENTS);
    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let url = url.clone();
        let subscribed = subscribed_tx.clone();
        tasks.push(tokio::spawn(async move {
            let encoding = if i % 2 == 0 {
                Encoding::Json
            } else {
                Encoding::Msgpack
            };
            let (mut client, _) = WsClient::connect(&url, encoding).await?;
            let reply = client
                .request("subscribe", json!({"channel": "crowd"}))
                .await?;
            assert_eq!(reply["op"], "subscribed");
            subscribed.send(()).await?;
            let mut seqs = Vec::new();
            while seqs.len() < MESSAGES as usize {
                seqs.push(
                    client.recv_message().await?["data"]
                        .as_u64()
                        .ok_or("no data")?,
                );
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(seqs)
        }));
    }
    drop(subscribed_tx);
    for _ in 0..CLIENTS {
        tokio::time::timeout(support::WAIT * 3, subscribed_rx.recv())
            .await?
            .ok_or("a client failed to subscribe")?;
    }
    assert_eq!(server.state.hub.connection_count(), CLIENTS);
    for seq in 0..MESSAGES {
        server.publish("crowd", json!(seq)).await?;
    }
    for task in tasks {
        assert_eq!(task.await??, (0..MESSAGES).collect::<Vec<_>>());
    }
    assert_eq!(
        server.state.metrics.deliveries.get(),
        CLIENTS as u64 * MESSAGES
    );
    server.stop().await
}
