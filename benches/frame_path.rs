//! The per-frame delivery path, in process and over real loopback sockets: from a frame
//! pushed into a client's queue (or a publication handed to the hub) to its bytes read
//! off the subscriber's socket.
//!
//! One real server (`Server::bind`, `worker_threads = 1`) runs on a current-thread tokio
//! runtime together with the benchmark's own subscribers, so a measurement is the CPU of
//! the whole path on one core, like the pinned node of docs/benchmarks.md: the hand-off,
//! the session or fan-out work, the `writev`, and the subscriber's `read` of the frame.
//!
//! - `push/1`: `ClientHandle::push` of one 100-byte frame, then the frame read back.
//! - `dispatch/1`: `Hub::dispatch` of a 100-byte publication to a channel with one
//!   subscriber (the many-channel workload, one frame per publication).
//! - `dispatch/256`: the same to 256 subscribers of one channel (fan-out), every frame
//!   read back; criterion reports it per frame.
//!
//! Run with `cargo bench --bench frame_path`. Instruction counts (user space, the
//! server's and the reader's), which a shared machine does not disturb:
//!
//! ```text
//! FRAME_PATH_ITERS=2000 valgrind --tool=callgrind --toggle-collect='*counted_run*' \
//!     target/release/deps/frame_path-<hash> --bench
//! ```
//!
//! runs every case `FRAME_PATH_ITERS` times outside criterion and prints nothing but the
//! iteration counts: divide callgrind's total `Ir` per case by them (one case at a time
//! with `FRAME_PATH_CASE=push/1`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use pushwire::config::Config;
use pushwire::hub::{ClientHandle, ClientId, Publication};
use pushwire::protocol::{ChannelName, Payload};
use pushwire::server::Server;
use pushwire::state::AppState;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// 100 bytes of JSON data, as the load generator publishes.
fn payload() -> BenchResult<Payload> {
    let data = format!("\"{}\"", "x".repeat(98));
    Ok(Payload::from_json_bytes(Bytes::from(data))?)
}

/// A subscriber reduced to its raw socket once connected and subscribed.
struct Subscriber {
    socket: TcpStream,
    id: ClientId,
    buf: Vec<u8>,
}

impl Subscriber {
    async fn open(state: &AppState, url: &str, channel: &str) -> BenchResult<Subscriber> {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        ws.send(Message::text(r#"{"op":"connect","id":1}"#)).await?;
        let connected = next_json(&mut ws).await?;
        let id = connected["client_id"]
            .as_str()
            .and_then(ClientId::parse)
            .ok_or("no client_id in the connected reply")?;
        ws.send(Message::text(format!(
            r#"{{"op":"subscribe","id":2,"channel":"{channel}"}}"#
        )))
        .await?;
        let subscribed = next_json(&mut ws).await?;
        if subscribed["op"] != "subscribed" {
            return Err(format!("subscribe answered {subscribed}").into());
        }
        if state.hub.client(id).is_none() {
            return Err("the subscriber is not registered".into());
        }
        // Nothing else is in flight: the raw stream starts at the next frame.
        let socket = match ws.into_inner() {
            tokio_tungstenite::MaybeTlsStream::Plain(socket) => socket,
            _ => return Err("expected a plain TCP stream".into()),
        };
        Ok(Subscriber {
            socket,
            id,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Reads one server frame (unmasked, final) and returns its payload length.
    async fn read_frame(&mut self) -> BenchResult<usize> {
        let mut header = [0u8; 2];
        self.socket.read_exact(&mut header).await?;
        let len = match header[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                self.socket.read_exact(&mut ext).await?;
                usize::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.socket.read_exact(&mut ext).await?;
                usize::try_from(u64::from_be_bytes(ext))?
            }
            short => usize::from(short),
        };
        if len > self.buf.len() {
            return Err(format!("frame of {len} bytes").into());
        }
        self.socket.read_exact(&mut self.buf[..len]).await?;
        Ok(len)
    }
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> BenchResult<serde_json::Value> {
    loop {
        match ws.next().await.ok_or("connection ended")?? {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(frame) => return Err(format!("closed: {frame:?}").into()),
            _ => continue,
        }
    }
}

struct Fixture {
    state: Arc<AppState>,
    url: String,
}

async fn start() -> BenchResult<Fixture> {
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\nworker_threads = 1\nmax_pending_connections_per_ip = 0\n\
                [api]\nkeys = [\"bench-api-key-0123456789\"]\n\
                [client]\nping_interval_secs = 3600\n";
    let server = Server::bind(Config::from_toml(toml)?).await?;
    let url = format!("ws://{}/ws", server.local_addr());
    let state = server.state();
    tokio::spawn(async move {
        let _ = server.run(std::future::pending::<()>()).await;
    });
    Ok(Fixture { state, url })
}

/// Runs `case` `iters` times; callgrind collects only inside this function
/// (`--toggle-collect='*counted_run*'`).
#[inline(never)]
fn counted_run(name: &str, iters: u64, case: &mut dyn FnMut()) {
    for _ in 0..iters {
        case();
    }
    eprintln!("{name}: {iters} iterations counted");
}

/// A failed read means the path is broken, not slow: stop the run.
fn must(read: BenchResult<usize>) -> usize {
    match read {
        Ok(len) => len,
        Err(err) => panic!("reading a frame failed: {err}"),
    }
}

fn frame_path(c: &mut Criterion) {
    if let Err(err) = run(c) {
        panic!("frame_path bench setup failed: {err}");
    }
}

fn run(c: &mut Criterion) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fixture = rt.block_on(start())?;
    let state = fixture.state.clone();
    let payload = payload()?;

    // push/1: a frame straight into one client's queue.
    let mut one = rt.block_on(Subscriber::open(&state, &fixture.url, "bench-push"))?;
    let client: Arc<ClientHandle> = state.hub.client(one.id).ok_or("client gone")?;
    let frame = Bytes::from(format!(
        r#"{{"op":"message","channel":"bench-push","data":"{}"}}"#,
        "x".repeat(98)
    ));
    let counting = std::env::var("FRAME_PATH_ITERS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
    let limits = state.hub.queue_limits();
    let only = std::env::var("FRAME_PATH_CASE").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if let Some(iters) = counting {
        if wanted("push/1") {
            counted_run("push/1", iters, &mut || {
                rt.block_on(async {
                    if state
                        .hub
                        .enqueue_within(&client, frame.clone(), limits)
                        .is_err()
                    {
                        panic!("push refused");
                    }
                    must(one.read_frame().await);
                })
            });
        }
    }
    let mut group = c.benchmark_group("frame_path");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    if counting.is_none() {
        group.bench_function("push/1", |b| {
            b.iter(|| {
                rt.block_on(async {
                    if state
                        .hub
                        .enqueue_within(&client, frame.clone(), limits)
                        .is_err()
                    {
                        panic!("push refused");
                    }
                    must(one.read_frame().await)
                })
            })
        });
    }

    // dispatch/1: one publication, one subscriber.
    let channel = ChannelName::parse("bench-one")?;
    let mut single = rt.block_on(Subscriber::open(&state, &fixture.url, "bench-one"))?;
    if let Some(iters) = counting.filter(|_| wanted("dispatch/1")) {
        counted_run("dispatch/1", iters, &mut || {
            rt.block_on(async {
                state
                    .hub
                    .dispatch(Publication::new(channel.clone(), payload.clone(), None))
                    .await;
                must(single.read_frame().await);
            })
        });
    }
    if counting.is_none() {
        group.bench_function("dispatch/1", |b| {
            b.iter(|| {
                rt.block_on(async {
                    state
                        .hub
                        .dispatch(Publication::new(channel.clone(), payload.clone(), None))
                        .await;
                    must(single.read_frame().await)
                })
            })
        });
    }

    // dispatch/256: one publication, 256 subscribers.
    const FANOUT: usize = 256;
    let channel = ChannelName::parse("bench-fanout")?;
    let mut many = Vec::with_capacity(FANOUT);
    for _ in 0..FANOUT {
        many.push(rt.block_on(Subscriber::open(&state, &fixture.url, "bench-fanout"))?);
    }
    if let Some(iters) = counting.filter(|_| wanted("dispatch/256")) {
        counted_run("dispatch/256", iters, &mut || {
            rt.block_on(async {
                state
                    .hub
                    .dispatch(Publication::new(channel.clone(), payload.clone(), None))
                    .await;
                for subscriber in &mut many {
                    must(subscriber.read_frame().await);
                }
            })
        });
        return Ok(());
    }
    if counting.is_some() {
        return Ok(());
    }
    group.throughput(Throughput::Elements(FANOUT as u64));
    group.bench_function("dispatch/256", |b| {
        b.iter(|| {
            rt.block_on(async {
                state
                    .hub
                    .dispatch(Publication::new(channel.clone(), payload.clone(), None))
                    .await;
                for subscriber in &mut many {
                    must(subscriber.read_frame().await);
                }
            })
        })
    });
    group.finish();
    Ok(())
}

criterion_group!(benches, frame_path);
criterion_main!(benches);
