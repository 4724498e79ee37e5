//! Property tests of the wire codecs: no input panics. Arbitrary bytes (and arbitrary
//! well-formed JSON or MessagePack that is not a valid message) decode to requests or to a
//! typed error; valid requests and batches round-trip in both encodings; publication data
//! converts between the encodings without panicking and without changing its value.
//! The fuzz targets in `fuzz/` search the same decoders far longer (scripts/fuzz.sh).

use bytes::Bytes;
use proptest::prelude::*;
use pushwire::protocol::{
    ChannelName, Encoding, MalformedFrame, Payload, Request, RequestError, StreamPosition,
    decode_frame, encode_publication,
};
use serde_json::{Map, Value, json};

type Decoded = Result<Vec<Result<Request, RequestError>>, MalformedFrame>;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// JSON values without floats (whose text form need not round-trip exactly).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Any MessagePack value, binary, extension types and non-string keys included.
fn msgpack_value() -> impl Strategy<Value = rmpv::Value> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<bool>().prop_map(rmpv::Value::from),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        any::<f32>().prop_map(rmpv::Value::from),
        any::<f64>().prop_map(rmpv::Value::from),
        ".{0,12}".prop_map(rmpv::Value::from),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(rmpv::Value::Binary),
        (any::<i8>(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(t, b)| rmpv::Value::Ext(t, b)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(rmpv::Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(rmpv::Value::Map),
        ]
    })
}

fn position() -> impl Strategy<Value = StreamPosition> {
    (any::<u64>(), ".{0,12}").prop_map(|(offset, epoch)| StreamPosition { offset, epoch })
}

/// A valid request with its `data` (for `publish`) kept as a JSON value.
fn request() -> impl Strategy<Value = (Request, Option<Value>)> {
    let text = || ".{0,24}";
    let id = any::<u64>();
    prop_oneof![
        (id, prop::option::of(text()), prop::option::of(text())).prop_map(|(id, token, client)| {
            (
                Request::Connect {
                    id,
                    token,
                    client,
                    data: None,
                },
                None,
            )
        }),
        (
            id,
            text(),
            prop::option::of(position()),
            prop::option::of(text())
        )
            .prop_map(|(id, channel, recover, token)| {
                let request = Request::Subscribe {
                    id,
                    channel,
                    recover,
                    token,
                };
                (request, None)
            }),
        (id, text()).prop_map(|(id, channel)| (Request::Unsubscribe { id, channel }, None)),
        (id, text(), json_value()).prop_map(|(id, channel, data)| {
            let request = Request::Publish {
                id,
                channel,
                data: Payload::null(),
            };
            (request, Some(data))
        }),
        (
            id,
            text(),
            prop::option::of(any::<u64>()),
            prop::option::of(text())
        )
            .prop_map(|(id, channel, limit, cursor)| {
                let request = Request::Presence {
                    id,
                    channel,
                    limit,
                    cursor,
                };
                (request, None)
            }),
        (id, text()).prop_map(|(id, channel)| (Request::PresenceStats { id, channel }, None)),
        (
            id,
            text(),
            prop::option::of(position()),
            prop::option::of(any::<u64>()),
            any::<bool>()
        )
            .prop_map(|(id, channel, since, limit, reverse)| {
                let request = Request::History {
                    id,
                    channel,
                    since,
                    limit,
                    reverse,
                };
                (request, None)
            }),
        (id, text()).prop_map(|(id, token)| (Request::Refresh { id, token }, None)),
        Just((Request::Pong, None)),
    ]
}

/// The request as a client sends it: a map with `op` and the fields that are set.
fn to_wire(request: &Request, data: Option<&Value>) -> Value {
    let mut m = json!({ "op": request.op() });
    let mut set = |key: &str, value: Value| {
        if !value.is_null() {
            m[key] = value;
        }
    };
    let position = |p: &Option<StreamPosition>| {
        p.as_ref().map_or(
            Value::Null,
            |p| json!({ "offset": p.offset, "epoch": p.epoch }),
        )
    };
    match request {
        Request::Connect {
            id, token, client, ..
        } => {
            set("id", json!(id));
            set("token", json!(token));
            set("client", json!(client));
        }
        Request::Subscribe {
            id,
            channel,
            recover,
            token,
        } => {
            set("id", json!(id));
            set("channel", json!(channel));
            set("recover", position(recover));
            set("token", json!(token));
        }
        Request::Unsubscribe { id, channel } | Request::PresenceStats { id, channel } => {
            set("id", json!(id));
            set("channel", json!(channel));
        }
        Request::Presence {
            id,
            channel,
            limit,
            cursor,
        } => {
            set("id", json!(id));
            set("channel", json!(channel));
            set("limit", json!(limit));
            set("cursor", json!(cursor));
        }
        Request::Publish { id, channel, .. } => {
            set("id", json!(id));
            set("channel", json!(channel));
            // `null` data is sent explicitly: it is a value like any other.
            m["data"] = data.cloned().unwrap_or(Value::Null);
        }
        Request::History {
            id,
            channel,
            since,
            limit,
            reverse,
        } => {
            set("id", json!(id));
            set("channel", json!(channel));
            set("since", position(since));
            set("limit", json!(limit));
            // `false` is the default: sent only sometimes, to cover both spellings.
            if *reverse || id % 2 == 0 {
                m["reverse"] = json!(reverse);
            }
        }
        Request::Refresh { id, token } => {
            set("id", json!(id));
            set("token", json!(token));
        }
        Request::Pong => {}
    }
    m
}

fn encode_batch(encoding: Encoding, messages: &[Value]) -> Vec<u8> {
    let mut frame = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match encoding {
            Encoding::Json => {
                if i > 0 {
                    frame.push(b'\n');
                }
                frame.extend(serde_json::to_vec(message).unwrap_or_default());
            }
            Encoding::Msgpack => frame.extend(rmp_serde::to_vec_named(message).unwrap_or_default()),
        }
    }
    frame
}

/// A payload's value, read back through JSON.
fn payload_as_json(payload: &Payload) -> Result<Value, String> {
    let text = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

/// Splits a decoded request into its fields without `data`, and `data` as JSON.
fn comparable(request: Request) -> Result<(Request, Option<Value>), String> {
    match request {
        Request::Publish { id, channel, data } => {
            let value = payload_as_json(&data)?;
            let rest = Request::Publish {
                id,
                channel,
                data: Payload::null(),
            };
            Ok((rest, Some(value)))
        }
        other => Ok((other, None)),
    }
}

/// Exercises everything that can be asked of a decoded frame.
fn touch(decoded: &Decoded) {
    if let Ok(requests) = decoded {
        for request in requests.iter().flatten() {
            if let Request::Publish { data, .. } = request {
                touch_payload(data);
            }
        }
    }
}

fn touch_payload(payload: &Payload) {
    let _ = payload.len();
    let _ = payload.top_level_binary();
    let _ = payload.json_base64();
    let _ = payload.fits_json();
    let _ = serde_json::to_vec(payload);
    let _ = rmp_serde::to_vec_named(payload);
    for encoding in Encoding::ALL {
        let position = StreamPosition {
            offset: 7,
            epoch: "e".into(),
        };
        let _ = encode_publication(encoding, "news", payload, Some(&position));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for encoding in Encoding::ALL {
            touch(&decode_frame(encoding, &bytes));
        }
    }

    #[test]
    fn arbitrary_json_never_panics(values in prop::collection::vec(json_value(), 1..4)) {
        touch(&decode_frame(Encoding::Json, &encode_batch(Encoding::Json, &values)));
        touch(&decode_frame(Encoding::Msgpack, &encode_batch(Encoding::Msgpack, &values)));
    }

    #[test]
    fn arbitrary_msgpack_never_panics(values in prop::collection::vec(msgpack_value(), 1..4)) {
        let mut frame = Vec::new();
        for value in &values {
            rmpv::encode::write_value(&mut frame, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        touch(&decode_frame(Encoding::Msgpack, &frame));
    }

    #[test]
    fn messages_with_arbitrary_field_values_never_panic(
        op in prop_oneof![
            prop::sample::select(vec!["connect", "subscribe", "publish", "history", "refresh"])
                .prop_map(String::from),
            ".{0,8}",
        ],
        fields in prop::collection::btree_map(
            prop_oneof![Just("id"), Just("channel"), Just("data"), Just("token"), Just("recover"), Just("since"), Just("limit")],
            msgpack_value(),
            0..6,
        ),
    ) {
        let mut entries = vec![(rmpv::Value::from("op"), rmpv::Value::from(op))];
        entries.extend(fields.into_iter().map(|(k, v)| (rmpv::Value::from(k), v)));
        let mut frame = Vec::new();
        rmpv::encode::write_value(&mut frame, &rmpv::Value::Map(entries)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = decode_frame(Encoding::Msgpack, &frame);
        // A map with a string `op` is never a malformed frame: it is a request or an error.
        prop_assert!(decoded.is_ok(), "{decoded:?}");
        touch(&decoded);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        (request, data) in request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for encoding in Encoding::ALL {
            let mut frame = encode_batch(encoding, &[to_wire(&request, data.as_ref())]);
            for (index, byte) in &flips {
                let at = index.index(frame.len());
                frame[at] = *byte;
            }
            touch(&decode_frame(encoding, &frame));
            frame.truncate(frame.len() / 2);
            touch(&decode_frame(encoding, &frame));
        }
    }

    #[test]
    fn valid_batches_round_trip_in_both_encodings(batch in prop::collection::vec(request(), 1..5)) {
        let wire: Vec<Value> = batch.iter().map(|(r, d)| to_wire(r, d.as_ref())).collect();
        for encoding in Encoding::ALL {
            let decoded = decode_frame(encoding, &encode_batch(encoding, &wire))
                .map_err(|e| TestCaseError::fail(format!("{encoding:?}: {e}")))?;
            prop_assert_eq!(decoded.len(), batch.len());
            for (got, (expected, data)) in decoded.into_iter().zip(&batch) {
                let got = got.map_err(|e| TestCaseError::fail(format!("{encoding:?}: {e:?}")))?;
                let got = comparable(got).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&got.0, expected, "{:?}", encoding);
                prop_assert_eq!(&got.1, data, "{:?}", encoding);
            }
        }
    }

    #[test]
    fn json_data_survives_a_trip_through_msgpack(value in json_value()) {
        let json = Payload::from_json_bytes(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let packed = rmp_serde::to_vec_named(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let msgpack = Payload::from_msgpack_bytes(Bytes::from(packed))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(msgpack.fits_json());
        prop_assert_eq!(payload_as_json(&msgpack).map_err(TestCaseError::fail)?, value);
    }

    #[test]
    fn msgpack_data_converts_or_falls_back_without_panicking(value in msgpack_value()) {
        let payload = Payload::from_msgpack_value(&value);
        touch_payload(&payload);
        let again = Payload::from_msgpack_bytes(match &payload {
            Payload::Msgpack(bytes) => bytes.clone(),
            Payload::Json(bytes) => bytes.clone(),
        });
        prop_assert!(again.is_ok());
        if payload.fits_json() {
            // What a JSON client receives reads back as the same value in MessagePack.
            let text = serde_json::to_vec(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(serde_json::from_slice::<Value>(&text).is_ok());
        } else {
            prop_assert!(payload.json_base64().is_some());
        }
    }

    #[test]
    fn unchecked_payload_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        touch_payload(&Payload::Msgpack(Bytes::from(bytes.clone())));
        touch_payload(&Payload::Json(Bytes::from(bytes.clone())));
        if let Ok(payload) = Payload::from_json_bytes(Bytes::from(bytes.clone())) {
            touch_payload(&payload);
        }
        if let Ok(payload) = Payload::from_msgpack_bytes(Bytes::from(bytes)) {
            touch_payload(&payload);
        }
    }

    #[test]
    fn channel_names_parse_or_refuse(name in ".{0,300}", user in ".{0,12}") {
        if let Ok(channel) = ChannelName::parse(&name) {
            prop_assert!(!name.is_empty() && name.len() <= 255);
            let _ = channel.namespace();
            let _ = channel.admits_user(&user);
            let _ = channel.allowed_users().map(|users| users.count());
        }
    }
}

#[test]
fn the_example_frames_of_the_protocol_decode() -> Result<(), MalformedFrame> {
    let frame = br#"{"op":"connect","id":1,"token":"t"}
{"op":"subscribe","id":2,"channel":"chat:room","recover":{"offset":5,"epoch":"e1"}}"#;
    let decoded = decode_frame(Encoding::Json, frame)?;
    assert_eq!(decoded.len(), 2);
    assert!(
        matches!(&decoded[1], Ok(Request::Subscribe { recover: Some(p), .. }) if p.offset == 5)
    );
    Ok(())
}
