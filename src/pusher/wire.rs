//! The Pusher wire format, server to client: `{"event","channel"?,"data","user_id"?}` as
//! one JSON text frame per event, `data` a JSON-encoded string (pusher-js and pysher
//! parse it). Publications are encoded here once per publication, through the hub's
//! per-encoding frame cache (`EncodedPublication::frame_for`), never per recipient.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::channel;
use crate::hub::Publication;
use crate::protocol::Payload;

/// `pusher:ping`, sent by the hub's ticker to idle Pusher clients.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(br#"{"event":"pusher:ping","data":"{}"}"#)
}

/// The frame of a Pusher publication; `None` for a native publication (no event name)
/// or a channel outside every app's space.
pub fn encode_publication(publication: &Publication) -> Option<Bytes> {
    let event = publication.event.as_deref()?;
    let (_, name) = channel::split(&publication.channel)?;
    let data = data_literal(&publication.payload)?;
    Some(frame(
        &event.name,
        Some(name),
        &data,
        event.user_id.as_deref(),
    ))
}

/// `pusher_internal:member_added {user_id, user_info}` or `member_removed {user_id}` for
/// a user joining or leaving an app's presence channel (the broker's per-user presence
/// events, see `broker::presence`); `None` for a channel outside every app's space.
pub fn presence_frame(
    channel: &crate::protocol::ChannelName,
    join: bool,
    member: &crate::protocol::ClientInfo,
) -> Option<Bytes> {
    let (_, name) = channel::split(channel)?;
    Some(if join {
        let info = member.info.clone().unwrap_or(serde_json::Value::Null);
        let data = serde_json::json!({"user_id": member.user, "user_info": info});
        frame_with("pusher_internal:member_added", Some(name), &data)
    } else {
        let data = serde_json::json!({"user_id": member.user});
        frame_with("pusher_internal:member_removed", Some(name), &data)
    })
}

/// A frame with `data` already a JSON literal (a string, or `{}` for `pusher:error`).
pub fn frame(event: &str, channel: Option<&str>, data: &str, user_id: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event.len() + 64);
    out.extend_from_slice(b"{\"event\":");
    push_json(&mut out, event);
    if let Some(channel) = channel {
        out.extend_from_slice(b",\"channel\":");
        push_json(&mut out, channel);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    if let Some(user_id) = user_id {
        out.extend_from_slice(b",\"user_id\":");
        push_json(&mut out, user_id);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// A frame whose `data` is `value` encoded as a JSON string (Pusher's convention).
pub fn frame_with(event: &str, channel: Option<&str>, value: &impl Serialize) -> Bytes {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    frame(event, channel, &json_string(&text), None)
}

/// `payload` as the JSON string literal that goes in `data`: a JSON string is used as
/// it is (what the HTTP API and client events publish); any other value is encoded as
/// JSON text and that text sent as a string. `None` if it has no JSON form.
pub fn data_literal(payload: &Payload) -> Option<Cow<'_, str>> {
    if let Payload::Json(bytes) = payload {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if text.starts_with('"') {
            return Some(Cow::Borrowed(text));
        }
    }
    let text = serde_json::to_string(payload).ok()?;
    Some(Cow::Owned(json_string(&text)))
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn push_json(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::NamedEvent;

    fn publication(payload: &'static [u8], user_id: Option<&str>) -> Option<Publication> {
        let (hub, _) = channel::to_hub("1", "presence-room;1").ok()?;
        let mut p = Publication::new(hub, Payload::Json(Bytes::from_static(payload)), None);
        p.event = Some(Arc::new(NamedEvent {
            name: Arc::from("client-typing"),
            user_id: user_id.map(Arc::from),
        }));
        Some(p)
    }

    fn parsed(bytes: &Bytes) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    #[test]
    fn string_data_passes_through_and_objects_become_strings() {
        let frame = publication(br#""{\"a\":1}""#, None)
            .as_ref()
            .and_then(encode_publication)
            .unwrap_or_default();
        assert_eq!(
            &frame[..],
            br#"{"event":"client-typing","channel":"presence-room;1","data":"{\"a\":1}"}"#
        );
        let frame = publication(br#"{"a": [1, "x"]}"#, Some("u\"1"))
            .as_ref()
            .and_then(encode_publication)
            .unwrap_or_default();
        let value = parsed(&frame);
        assert_eq!(value["data"], r#"{"a": [1, "x"]}"#);
        assert_eq!(value["user_id"], "u\"1");
        assert_eq!(value["channel"], "presence-room;1");
    }

    #[test]
    fn native_publications_have_no_pusher_frame() {
        let Some(mut p) = publication(b"1", None) else {
            panic!("valid channel");
        };
        p.event = None;
        assert_eq!(encode_publication(&p), None);
    }

    #[test]
    fn control_frames() {
        let value = parsed(&frame_with(
            "pusher:connection_established",
            None,
            &serde_json::json!({"socket_id": "1.2", "activity_timeout": 120}),
        ));
        assert_eq!(
            value["data"],
            r#"{"activity_timeout":120,"socket_id":"1.2"}"#
        );
        assert_eq!(parsed(&ping_frame())["event"], "pusher:ping");
    }
}
