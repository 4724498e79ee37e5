//! What both targets do with a frame: decode it as the session does, then encode every
//! decoded publication as the hub would for subscribers of each encoding. Any panic is a
//! crash; errors are expected answers.

use pushwire::protocol::{
    ChannelName, Encoding, Request, StreamPosition, decode_frame, encode_publication,
};

pub fn decode_and_deliver(encoding: Encoding, frame: &[u8]) {
    let Ok(requests) = decode_frame(encoding, frame) else {
        return;
    };
    let position = StreamPosition {
        offset: 1,
        epoch: "fuzz".into(),
    };
    for request in requests.into_iter().flatten() {
        match request {
            Request::Publish { channel, data, .. } => {
                let _ = ChannelName::parse(&channel);
                for to in Encoding::ALL {
                    let _ = encode_publication(to, "fuzz", &data, Some(&position));
                }
            }
            Request::Subscribe { channel, .. }
            | Request::Unsubscribe { channel, .. }
            | Request::Presence { channel, .. }
            | Request::PresenceStats { channel, .. }
            | Request::History { channel, .. } => {
                if let Ok(channel) = ChannelName::parse(&channel) {
                    let _ = channel.namespace();
                    let _ = channel.admits_user("fuzz");
                }
            }
            Request::Connect { .. } | Request::Refresh { .. } | Request::Pong => {}
        }
    }
}
