//! Test fixtures: a real pushwire server on 127.0.0.1:0 (in-process, or the real binary),
//! a WebSocket test client speaking either encoding, and an HTTP API client.
//! Every wait is bounded by `WAIT`, and fails the test when it runs out.
#![allow(dead_code)]

pub mod client;
pub mod deploy;
pub mod external;
pub mod observability;
pub mod redis_server;
pub mod server;
pub mod webhook_receiver;

pub use client::{Encoding, WsClient};
#[allow(unused_imports)]
pub use redis_server::RedisServer;
#[allow(unused_imports)]
pub use server::{BinaryServer, TestServer, api_key};

use std::time::Duration;

/// The longest any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Result type of tests: failures carry a message.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Shorthand for failing with a message.
pub fn fail<T>(message: impl Into<String>) -> TestResult<T> {
    Err(message.into().into())
}
