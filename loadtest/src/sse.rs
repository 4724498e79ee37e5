//! The slice of pushwire's SSE stream (`GET /sse`, docs/protocol.md section 10) the load
//! generator reads with `--encoding sse`: event blocks mapped onto the native message
//! shapes the sessions already handle. Pure: no I/O.

use crate::wire::{BenchProbe, Epoch, ServerMsg, ServerOp};

/// The request path of a stream of `channel`.
pub fn path(channel: &str) -> String {
    let mut encoded = String::with_capacity(channel.len());
    for byte in channel.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(byte as char)
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    format!("/sse?channel={encoded}")
}

/// Decodes one event block into `out`.
pub fn decode(block: &str, out: &mut Vec<ServerMsg>) {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if line.starts_with(": connected") {
            // The stream is subscribed as soon as it is open.
            let mut connected = ServerMsg::of(ServerOp::Connected);
            connected.id = Some(1);
            out.push(connected);
            let mut subscribed = ServerMsg::of(ServerOp::Subscribed);
            subscribed.id = Some(2);
            out.push(subscribed);
        } else if line == ": ping" {
            out.push(ServerMsg::of(ServerOp::Ping));
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v);
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v);
        } else if let Some(v) = line.strip_prefix("data: ") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v);
        }
    }
    let Some(event) = event else {
        return;
    };
    let msg = match event {
        "disconnect" => {
            let mut msg = ServerMsg::of(ServerOp::Disconnect);
            let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            msg.code = value["code"].as_u64().map(|c| c as u32);
            msg.reason = value["reason"].as_str().map(str::to_owned);
            msg
        }
        "recovered" => ServerMsg::of(ServerOp::Other),
        _ => {
            let mut msg = ServerMsg::of(ServerOp::Message);
            msg.data = serde_json::from_str::<BenchProbe>(&data).ok();
            if let Some((_, position)) = id.and_then(|id| id.rsplit_once('@')) {
                if let Some((epoch, offset)) = position.rsplit_once(':') {
                    msg.epoch = Some(Epoch::new(epoch));
                    msg.offset = offset.parse().ok();
                }
            }
            msg
        }
    };
    out.push(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_blocks_onto_native_messages() {
        let mut out = Vec::new();
        decode("retry: 1000\n: connected 00ab", &mut out);
        decode(": ping", &mut out);
        decode(
            "id: hist:b@e1:7\nevent: hist:b\ndata: {\"ts\":5,\"seq\":3,\"s\":0,\"pad\":\"\"}",
            &mut out,
        );
        decode(
            "event: disconnect\ndata: {\"code\":1001,\"reason\":\"bye\",\"reconnect\":true}",
            &mut out,
        );
        let ops: Vec<ServerOp> = out.iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            [
                ServerOp::Connected,
                ServerOp::Subscribed,
                ServerOp::Ping,
                ServerOp::Message,
                ServerOp::Disconnect
            ]
        );
        assert_eq!(out[3].offset, Some(7));
        assert_eq!(out[3].data.map(|d| d.seq), Some(Some(3)));
        assert_eq!(out[4].code, Some(1001));
    }

    #[test]
    fn paths_escape_channel_names() {
        assert_eq!(path("hist:bench.3"), "/sse?channel=hist%3Abench.3");
    }
}
