//! Publication data (`data` in PROTOCOL.md): kept in the encoding it arrived in and
//! rendered into the other encoding once per publication, never per recipient.
//!
//! `Payload` implements `Serialize` so replies can embed it with serde: a JSON payload is
//! passed through raw into `serde_json`, anything else is transcoded value by value.

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Deepest nesting accepted in MessagePack data (serde_json has its own limit of 128).
pub const MAX_MSGPACK_DEPTH: usize = 128;

/// One publication's data, in the encoding it was published in.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// Validated JSON text of one value.
    Json(Bytes),
    /// One MessagePack value.
    Msgpack(Bytes),
}

/// Why bytes are not a valid payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("data is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("data is not one valid MessagePack value (or cannot become one)")]
    Msgpack,
}

impl Payload {
    pub fn null() -> Self {
        Payload::Json(Bytes::from_static(b"null"))
    }

    pub fn from_raw_json(raw: &RawValue) -> Self {
        Payload::Json(Bytes::copy_from_slice(raw.get().as_bytes()))
    }

    /// Validates `bytes` as exactly one JSON value.
    pub fn from_json_bytes(bytes: Bytes) -> Result<Self, PayloadError> {
        let _: &RawValue = serde_json::from_slice(&bytes)?;
        Ok(Payload::Json(bytes))
    }

    /// Checks that the data can be delivered to clients of both encodings (a JSON number
    /// like `1e400` is valid JSON text but no number, so it cannot become MessagePack).
    pub fn check_deliverable(&self) -> Result<(), PayloadError> {
        match self {
            Payload::Json(text) => {
                let mut de = serde_json::Deserializer::from_slice(text);
                let mut sink = rmp_serde::Serializer::new(std::io::sink());
                serde_transcode::transcode(&mut de, &mut sink).map_err(|_| PayloadError::Msgpack)
            }
            Payload::Msgpack(_) => Ok(()),
        }
    }

    pub fn from_msgpack_value(value: &rmpv::Value) -> Self {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, value);
        Payload::Msgpack(Bytes::from(out))
    }

    /// Validates `bytes` as exactly one MessagePack value.
    pub fn from_msgpack_bytes(bytes: Bytes) -> Result<Self, PayloadError> {
        let mut rest: &[u8] = &bytes;
        rmpv::decode::read_value_with_max_depth(&mut rest, MAX_MSGPACK_DEPTH)
            .map_err(|_| PayloadError::Msgpack)?;
        if !rest.is_empty() {
            return Err(PayloadError::Msgpack);
        }
        Ok(Payload::Msgpack(bytes))
    }

    /// Size of the data as it arrived, in bytes (what size limits count).
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(b) | Payload::Msgpack(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For MessagePack `bin` data, the raw bytes: JSON clients get them base64-encoded in
    /// `data_b64` (PROTOCOL.md section 1).
    pub fn top_level_binary(&self) -> Option<&[u8]> {
        let Payload::Msgpack(bytes) = self else {
            return None;
        };
        let (header, len_bytes) = match bytes.first()? {
            0xc4 => (2, 1),
            0xc5 => (3, 2),
            0xc6 => (5, 4),
            _ => return None,
        };
        // `get`, not indexing: a `Payload::Msgpack` built from unchecked bytes may be cut
        // short (found by tests/codec_props.rs).
        let len = bytes
            .get(1..header)?
            .iter()
            .take(len_bytes)
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        bytes.get(header..header.checked_add(len)?)
    }

    /// The base64 form a JSON client receives in `data_b64`, when `data` cannot carry it.
    pub fn json_base64(&self) -> Option<String> {
        let engine = base64::engine::general_purpose::STANDARD;
        match self {
            Payload::Msgpack(bytes) => {
                Some(engine.encode(self.top_level_binary().unwrap_or(bytes)))
            }
            Payload::Json(_) => None,
        }
    }

    /// Whether this payload can be written as JSON `data` (else it goes in `data_b64`).
    pub fn fits_json(&self) -> bool {
        match self {
            Payload::Json(_) => true,
            Payload::Msgpack(_) if self.top_level_binary().is_some() => false,
            Payload::Msgpack(_) => serde_json::to_writer(std::io::sink(), self).is_ok(),
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let human_readable = serializer.is_human_readable();
        match self {
            Payload::Json(text) if human_readable => {
                // serde_json recognises RawValue and writes the text as it is.
                let raw: &RawValue = serde_json::from_slice(text).map_err(S::Error::custom)?;
                raw.serialize(serializer)
            }
            Payload::Json(text) => {
                let mut de = serde_json::Deserializer::from_slice(text);
                serde_transcode::transcode(&mut de, serializer)
            }
            Payload::Msgpack(bytes) => {
                let mut de = rmp_serde::Deserializer::from_read_ref(&bytes[..]);
                serde_transcode::transcode(&mut de, serializer)
            }
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Json(b) => write!(f, "Json({})", String::from_utf8_lossy(b)),
            Payload::Msgpack(b) => write!(f, "Msgpack({} bytes)", b.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_json(p: &Payload) -> String {
        serde_json::to_string(p).unwrap_or_default()
    }

    fn to_msgpack_value(p: &Payload) -> rmpv::Value {
        let bytes = rmp_serde::to_vec_named(p).unwrap_or_default();
        rmpv::decode::read_value(&mut &bytes[..]).unwrap_or(rmpv::Value::Nil)
    }

    #[test]
    fn json_passes_through_raw() -> Result<(), PayloadError> {
        let p = Payload::from_json_bytes(Bytes::from_static(br#"{"b":1,  "a":[true,null]}"#))?;
        assert_eq!(to_json(&p), r#"{"b":1,  "a":[true,null]}"#);
        Ok(())
    }

    #[test]
    fn json_becomes_msgpack_map() -> Result<(), PayloadError> {
        let p = Payload::from_json_bytes(Bytes::from_static(br#"{"hello":"world","n":-3}"#))?;
        let v = to_msgpack_value(&p);
        assert_eq!(v["hello"].as_str(), Some("world"));
        assert_eq!(v["n"].as_i64(), Some(-3));
        Ok(())
    }

    #[test]
    fn msgpack_becomes_json() {
        let value = rmpv::Value::Map(vec![("k".into(), rmpv::Value::from(1.5))]);
        let p = Payload::from_msgpack_value(&value);
        assert!(p.fits_json());
        assert_eq!(to_json(&p), r#"{"k":1.5}"#);
    }

    #[test]
    fn binary_goes_to_base64() {
        let p = Payload::from_msgpack_value(&rmpv::Value::Binary(vec![0, 1, 2, 255]));
        assert!(!p.fits_json());
        assert_eq!(p.json_base64().as_deref(), Some("AAEC/w=="));
    }

    #[test]
    fn non_string_keys_fall_back_to_base64() {
        let key = rmpv::Value::Array(vec![1.into()]);
        let p = Payload::from_msgpack_value(&rmpv::Value::Map(vec![(key, 2.into())]));
        assert!(!p.fits_json());
        assert!(p.json_base64().is_some());
    }

    #[test]
    fn truncated_binary_headers_are_not_binary() {
        for bytes in [
            &[0xc4][..],
            &[0xc5, 0x00],
            &[0xc6, 0, 0, 0],
            &[0xc4, 0x05, 1],
        ] {
            let p = Payload::Msgpack(Bytes::copy_from_slice(bytes));
            assert_eq!(p.top_level_binary(), None);
            assert!(p.json_base64().is_some());
        }
    }

    #[test]
    fn numbers_out_of_range_are_not_deliverable() {
        let p = Payload::Json(Bytes::from_static(b"[1e400]"));
        assert!(p.check_deliverable().is_err());
        assert!(
            Payload::Json(Bytes::from_static(b"[1e300]"))
                .check_deliverable()
                .is_ok()
        );
    }

    #[test]
    fn rejects_invalid_data() {
        assert!(Payload::from_json_bytes(Bytes::from_static(b"{")).is_err());
        assert!(Payload::from_json_bytes(Bytes::from_static(b"1 2")).is_err());
        assert!(Payload::from_msgpack_bytes(Bytes::from_static(&[0x92, 0x01])).is_err());
        assert!(Payload::from_msgpack_bytes(Bytes::from_static(&[0x01, 0x02])).is_err());
    }
}
