//! The Server-Sent Events wire format (`text/event-stream`): one event per publication,
//! `id: <channel>@<epoch>:<offset>` on history channels, `event: <channel>`, `data:` the
//! publication's data as JSON. Encoded once per publication through the hub's frame cache
//! (`EncodedPublication::frame_for`), never per recipient.

use bytes::{BufMut, Bytes, BytesMut};

use crate::hub::Publication;
use crate::protocol::{ChannelName, Payload, StreamPosition};

/// The comment the ticker sends as a heartbeat (clients ignore it; proxies see traffic).
pub fn heartbeat_frame() -> Bytes {
    Bytes::from_static(b": ping\n\n")
}

/// The frame of a native publication; `None` for a Pusher event (SSE streams read native
/// channels only) or data that cannot be JSON.
pub fn encode_publication(publication: &Publication) -> Option<Bytes> {
    if publication.event.is_some() {
        return None;
    }
    let data = json_text(&publication.payload)?;
    Some(event_frame(
        publication
            .position
            .as_ref()
            .map(|p| (&publication.channel, p)),
        publication.channel.as_str(),
        &data,
    ))
}

/// A recovered message (`Last-Event-ID` resume), in the same form as a live one.
pub fn encode_recovered(
    channel: &ChannelName,
    position: &StreamPosition,
    payload: &Payload,
) -> Option<Bytes> {
    let data = json_text(payload)?;
    Some(event_frame(
        Some((channel, position)),
        channel.as_str(),
        &data,
    ))
}

/// An event of the stream itself (`recovered`, `disconnect`) with JSON `data`.
pub fn notice_frame(event: &str, data: &serde_json::Value) -> Bytes {
    event_frame(None, event, data.to_string().as_bytes())
}

/// The `id` of an event at `position` of `channel`.
pub fn event_id(channel: &ChannelName, position: &StreamPosition) -> String {
    format!("{channel}@{}:{}", position.epoch, position.offset)
}

/// Parses a `Last-Event-ID`: the channel and the position the client saw last.
pub fn parse_event_id(id: &str) -> Option<(ChannelName, StreamPosition)> {
    let (channel, position) = id.trim().rsplit_once('@')?;
    let (epoch, offset) = position.rsplit_once(':')?;
    let channel = ChannelName::parse(channel).ok()?;
    Some((
        channel,
        StreamPosition {
            offset: offset.parse().ok()?,
            epoch: epoch.to_owned(),
        },
    ))
}

fn json_text(payload: &Payload) -> Option<Vec<u8>> {
    match payload {
        Payload::Json(bytes) => Some(bytes.to_vec()),
        Payload::Msgpack(_) => serde_json::to_vec(payload).ok(),
    }
}

fn event_frame(id: Option<(&ChannelName, &StreamPosition)>, event: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.len() * 2 + 48);
    if let Some((channel, position)) = id {
        out.put_slice(b"id: ");
        out.put_slice(event_id(channel, position).as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_u8(b'\n');
    // A line break inside the JSON text (pretty-printed data) starts another `data:` line;
    // the client joins them back with `\n`.
    for line in lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line);
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The lines of `data` as an event stream parser sees them: `\r\n`, `\n` and a lone `\r`
/// each end one (a bare `\r` is legal JSON whitespace and would otherwise cut the data).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        let Some(end) = text.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
            rest = None;
            return Some(text);
        };
        let (line, tail) = text.split_at(end);
        let tail = tail
            .strip_prefix(b"\r\n")
            .or_else(|| tail.get(1..))
            .unwrap_or_default();
        rest = Some(tail);
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn a_history_publication_carries_its_position_as_id() {
        let position = StreamPosition {
            offset: 7,
            epoch: "e1".into(),
        };
        let p = Publication::new(
            channel("chat:room"),
            Payload::Json(Bytes::from_static(b"{\"a\":1}")),
            Some(position),
        );
        assert_eq!(
            encode_publication(&p).unwrap(),
            "id: chat:room@e1:7\nevent: chat:room\ndata: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn multi_line_json_becomes_several_data_lines() {
        let p = Publication::new(
            channel("news"),
            Payload::Json(Bytes::from_static(b"{\n \"a\": 1\n}")),
            None,
        );
        assert_eq!(
            encode_publication(&p).unwrap(),
            "event: news\ndata: {\ndata:  \"a\": 1\ndata: }\n\n"
        );
    }

    #[test]
    fn carriage_returns_in_json_end_data_lines_too() {
        let p = Publication::new(
            channel("news"),
            Payload::Json(Bytes::from_static(b"{\"a\":1,\r\"b\":2,\r\n\"c\":3}")),
            None,
        );
        assert_eq!(
            encode_publication(&p).unwrap(),
            "event: news\ndata: {\"a\":1,\ndata: \"b\":2,\ndata: \"c\":3}\n\n"
        );
    }

    #[test]
    fn event_ids_round_trip() {
        let position = StreamPosition {
            offset: 42,
            epoch: "abc".into(),
        };
        let id = event_id(&channel("chat:dm@x"), &position);
        let (c, p) = parse_event_id(&id).unwrap();
        assert_eq!(c.as_str(), "chat:dm@x");
        assert_eq!(p, position);
        assert!(parse_event_id("garbage").is_none());
        assert!(parse_event_id("news@e:notanumber").is_none());
    }
}
