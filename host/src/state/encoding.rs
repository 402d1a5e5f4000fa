//! Byte encodings of the state tier: counters, version tokens and the record
//! layout the durable backend stores. Pure functions, tested alone.

use crate::error::{Error, Result};

/// Encode a counter as the WIT documents it: 8 bytes, two's-complement s64,
/// little-endian.
pub fn encode_counter(value: i64) -> [u8; 8] {
    value.to_le_bytes()
}

/// Decode a counter; any length but 8 is a precondition failure.
pub fn decode_counter(bytes: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        Error::PreconditionFailed(format!("value is {} bytes, not an 8-byte little-endian s64 counter", bytes.len()))
    })?;
    Ok(i64::from_le_bytes(arr))
}

/// Encode a counter as `wasi:keyvalue` keeps it: decimal ASCII, `-` for
/// negatives, no leading `+`, zeros or spaces (what Redis `INCRBY` writes).
pub fn encode_decimal_counter(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Decode a decimal ASCII counter (what Redis `INCRBY` accepts: an optional
/// `-`, then 1 to 19 digits, within s64 range). Anything else is a
/// precondition failure that names what was found.
pub fn decode_decimal_counter(bytes: &[u8]) -> Result<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let well_formed = !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit);
    let parsed = if well_formed { std::str::from_utf8(bytes).ok().and_then(|t| t.parse::<i64>().ok()) } else { None };
    parsed.ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(24)]).escape_debug().collect();
        Error::PreconditionFailed(format!(
            "value ({} bytes, \"{shown}\") is not a decimal ASCII s64 counter (wasi:keyvalue counters are decimal text; databelt:state counters are 8-byte little-endian)",
            bytes.len()
        ))
    })
}

/// Encode a version as the opaque token handed to guests.
pub fn encode_version(version: u64) -> Vec<u8> {
    version.to_le_bytes().to_vec()
}

/// Decode a version token; `None` when it is not one this host issued.
pub fn decode_version(token: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = token.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// Length of the record header: version (u64 LE) then expiry (u64 LE, 0 = none).
pub(crate) const RECORD_HEADER: usize = 16;

/// Lay out a stored record: header then the value bytes.
pub(crate) fn encode_record(version: u64, expires_at_ms: Option<u64>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Read a record's header; `None` when the record is truncated.
pub(crate) fn decode_record_header(bytes: &[u8]) -> Option<(u64, Option<u64>)> {
    let version = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let expires = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((version, (expires != 0).then_some(expires)))
}

/// Read a whole record.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<super::Entry> {
    let (version, expires_at_ms) = decode_record_header(bytes)
        .ok_or_else(|| Error::storage_msg(format!("corrupt record of {} bytes", bytes.len())))?;
    Ok(super::Entry { value: bytes[RECORD_HEADER..].to_vec(), version, expires_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counter_encoding_is_little_endian() {
        assert_eq!(encode_counter(1), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_counter(-1), [0xff; 8]);
        assert!(matches!(decode_counter(b"1234567"), Err(Error::PreconditionFailed(_))));
        assert!(matches!(decode_counter(b""), Err(Error::PreconditionFailed(_))));
    }

    #[test]
    fn decimal_counters_follow_redis_incrby() {
        assert_eq!(encode_decimal_counter(-42), b"-42");
        assert_eq!(decode_decimal_counter(b"5").unwrap(), 5);
        assert_eq!(decode_decimal_counter(b"-9223372036854775808").unwrap(), i64::MIN);
        for bad in [
            &b""[..],
            b"-",
            b"+5",
            b" 5",
            b"5 ",
            b"1.0",
            b"9223372036854775808",
            b"12345678901234567890",
            &[1, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(matches!(decode_decimal_counter(bad), Err(Error::PreconditionFailed(_))), "{bad:?}");
        }
    }

    #[test]
    fn truncated_record_is_an_error() {
        assert!(decode_record(&[0; 15]).is_err());
        assert!(decode_record(&[0; 16]).is_ok());
    }

    proptest! {
        #[test]
        fn counter_round_trips(v in any::<i64>()) {
            prop_assert_eq!(decode_counter(&encode_counter(v)).unwrap(), v);
        }

        #[test]
        fn decimal_counter_round_trips(v in any::<i64>()) {
            prop_assert_eq!(decode_decimal_counter(&encode_decimal_counter(v)).unwrap(), v);
        }

        #[test]
        fn version_round_trips(v in any::<u64>()) {
            prop_assert_eq!(decode_version(&encode_version(v)), Some(v));
        }

        #[test]
        fn foreign_tokens_are_rejected(t in proptest::collection::vec(any::<u8>(), 0..32)) {
            prop_assume!(t.len() != 8);
            prop_assert_eq!(decode_version(&t), None);
        }

        #[test]
        fn record_round_trips(version in any::<u64>(), exp in proptest::option::of(1u64..), value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let e = decode_record(&encode_record(version, exp, &value)).unwrap();
            prop_assert_eq!(e.version, version);
            prop_assert_eq!(e.expires_at_ms, exp);
            prop_assert_eq!(e.value, value);
        }
    }
}
