//! OpenTelemetry traces: one publication through two nodes and a real Redis is one trace
//! (API request, broker publish, relay receive on the subscriber's node, fan-out per
//! shard, a sampled delivery), continuing a `traceparent` sent with the API request; and
//! the real binary exports OTLP/HTTP that a receiver decodes with the OpenTelemetry
//! protobuf types.

mod support;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use prost::Message as _;
use serde_json::json;
use support::{
    BinaryServer, Encoding, RedisServer, TestResult, TestServer, WAIT, WsClient, api_key, fail,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn node_config(redis: &RedisServer) -> String {
    format!(
        "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"traces\"\n",
        redis.url()
    )
}

fn find<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Waits until the exporter holds every span the trace should have.
async fn spans_of_one_publication(exporter: &InMemorySpanExporter) -> TestResult<Vec<SpanData>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans = exporter.get_finished_spans()?;
        let names = [
            "api.request",
            "broker.publish",
            "relay.receive",
            "fanout.shard",
            "deliver",
        ];
        if names.iter().all(|n| !find(&spans, n).is_empty()) {
            return Ok(spans);
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
            return fail(format!("incomplete trace: {seen:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publication_across_two_nodes_is_one_trace_under_the_callers_traceparent() -> TestResult
{
    let config = pushwire::telemetry::TracingConfig {
        enabled: true,
        sample_ratio: 1.0,
        delivery_sample_ratio: 1.0,
        ..Default::default()
    };
    let exporter = InMemorySpanExporter::default();
    let provider = pushwire::telemetry::provider_builder(&config, "test")
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(pushwire::telemetry::layer(&provider, &config))
        .try_init()?;

    let redis = RedisServer::start().await?;
    let publisher = TestServer::start(&node_config(&redis)).await?;
    let subscriber = TestServer::start(&node_config(&redis)).await?;
    let (mut client, _) = WsClient::connect(&subscriber.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;

    let response = publisher
        .http()
        .post(publisher.http_url("/api/publish"))
        .bearer_auth(api_key())
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({"channel": "news", "data": "traced"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(client.recv_message().await?["data"], "traced");

    let spans = spans_of_one_publication(&exporter).await?;
    let trace = TraceId::from_hex(TRACE_ID)?;
    let one = |name: &str| -> TestResult<&SpanData> {
        match find(&spans, name).as_slice() {
            [span] => Ok(span),
            other => fail(format!("{} {name} spans", other.len())),
        }
    };
    let api = one("api.request")?;
    let broker = one("broker.publish")?;
    let relay = one("relay.receive")?;
    let fanout = find(&spans, "fanout.shard");
    let deliver = one("deliver")?;
    for span in [api, broker, relay, deliver]
        .into_iter()
        .chain(fanout.iter().copied())
    {
        assert_eq!(
            span.span_context.trace_id(),
            trace,
            "{} is in the caller's trace",
            span.name
        );
    }
    assert_eq!(
        api.parent_span_id,
        SpanId::from_hex(PARENT_SPAN)?,
        "traceparent is the parent"
    );
    assert_eq!(broker.parent_span_id, api.span_context.span_id());
    assert_eq!(relay.parent_span_id, broker.span_context.span_id());
    assert!(
        relay
            .links
            .iter()
            .any(|l| l.span_context.span_id() == broker.span_context.span_id()),
        "the relay receive is linked to the publisher's span"
    );
    assert!(
        fanout
            .iter()
            .all(|f| f.parent_span_id == relay.span_context.span_id())
    );
    assert!(
        fanout
            .iter()
            .any(|f| f.span_context.span_id() == deliver.parent_span_id)
    );
    let attr = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr(api, "route").as_deref(), Some("publish"));
    assert_eq!(attr(api, "channel").as_deref(), Some("news"));
    assert_eq!(attr(api, "http.status_code").as_deref(), Some("200"));
    assert_eq!(attr(broker, "broker").as_deref(), Some("redis"));
    assert!(
        fanout
            .iter()
            .any(|f| attr(f, "recipients").as_deref() == Some("1"))
    );

    // A publication without traceparent starts its own trace (sample_ratio 1.0 here).
    exporter.reset();
    publisher.publish("news", json!("untraced-parent")).await?;
    client.recv_message().await?;
    let spans = spans_of_one_publication(&exporter).await?;
    let api = find(&spans, "api.request")[0];
    assert_ne!(api.span_context.trace_id(), trace);
    assert_eq!(api.parent_span_id, SpanId::INVALID);
    let _ = provider.shutdown();
    Ok(())
}

#[tokio::test]
async fn the_binary_exports_otlp_http_that_the_protobuf_types_decode() -> TestResult {
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (got, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let store = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            let got = got.clone();
            async move {
                if let Ok(mut bodies) = store.lock() {
                    bodies.push(body.to_vec());
                }
                let _ = got.send(());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let server = BinaryServer::start(&format!(
        "[tracing]\nenabled = true\nendpoint = \"{endpoint}\"\nsample_ratio = 1.0\nservice_name = \"pushwire-test\"\n"
    ))
    .await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    client
        .request("subscribe", json!({"channel": "news"}))
        .await?;
    let published = reqwest::Client::new()
        .post(format!("http://{}/api/publish", server.addr))
        .bearer_auth(api_key())
        .json(&json!({"channel": "news", "data": 1}))
        .send()
        .await?;
    assert_eq!(published.status(), 200);
    client.recv_message().await?;
    // A graceful stop flushes the batch.
    server.terminate()?;
    tokio::time::timeout(WAIT, arrived.recv())
        .await?
        .ok_or("no export")?;
    let bodies = bodies.lock().map_err(|_| "poisoned")?.clone();
    let mut names = Vec::new();
    let mut services = Vec::new();
    for body in bodies {
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )?;
        for resource in request.resource_spans {
            for kv in resource.resource.map(|r| r.attributes).unwrap_or_default() {
                if kv.key == "service.name" {
                    services.push(format!("{:?}", kv.value));
                }
            }
            for scope in resource.scope_spans {
                names.extend(scope.spans.into_iter().map(|s| s.name));
            }
        }
    }
    assert!(names.iter().any(|n| n == "api.request"), "{names:?}");
    assert!(names.iter().any(|n| n == "broker.publish"), "{names:?}");
    assert!(names.iter().any(|n| n == "fanout.shard"), "{names:?}");
    assert!(
        services.iter().any(|s| s.contains("pushwire-test")),
        "{services:?}"
    );
    Ok(())
}
