//! The APIs and versions this listener serves, and the `ApiVersions`
//! answer built from them. A request for anything else is answered with
//! `UNSUPPORTED_VERSION` in an `ApiVersions` v0 body (what Kafka brokers
//! answer to a version they do not know) and the connection is closed.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// `(api, min version, max version)` served. Versions are chosen so
/// current librdkafka (kcat 1.7, confluent-kafka 2.x) negotiates one of
/// them and none needs topic ids (docs/kafka.md lists them).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    // v0 is advertised because librdkafka requires it in the range to
    // offer SASL at all; a v0 handshake (raw SASL frames after it) is
    // answered UNSUPPORTED_VERSION (see `sasl.rs`).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Whether `version` of api `key` is served.
#[must_use]
pub fn supported(key: i16, version: i16) -> Option<ApiKey> {
    SUPPORTED
        .iter()
        .find(|(k, min, max)| *k as i16 == key && (*min..=*max).contains(&version))
        .map(|(k, _, _)| *k)
}

/// The `ApiVersions` answer: every served range, and `error`.
#[must_use]
pub fn api_versions(error: Option<ResponseError>) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error.map_or(0, |e| e.code());
    r.api_keys = SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Message;

    use super::*;

    #[test]
    fn served_versions_are_ones_the_codec_knows() {
        for (k, min, max) in SUPPORTED {
            let codec = k.valid_versions();
            assert!(codec.min <= *min && *max <= codec.max, "{k:?}");
            assert!(
                supported(*k as i16, *min).is_some() && supported(*k as i16, *max + 1).is_none()
            );
        }
        assert!(supported(1000, 0).is_none());
        let _ = ApiVersionsResponse::VERSIONS;
    }
}
