//! SASL/PLAIN on the Kafka listener: with `--token` set, a connection
//! must authenticate (SaslHandshake v1 naming `PLAIN` — v0, after which
//! raw SASL frames would follow, is refused — then
//! SaslAuthenticate) with the token as its password before any request
//! but ApiVersions; the user name is not checked. Anything else before
//! that closes the connection, as a Kafka broker does; a wrong password
//! is answered with `SASL_AUTHENTICATION_FAILED` and the connection is
//! closed. The token is read when the connection opens and compared in
//! constant time (`auth::Token::matches`). Without `--token` every
//! connection is open (and PLAIN accepts any password). Pure apart from
//! reading the live token.

use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::Token;

/// The one mechanism offered.
pub const PLAIN: &str = "PLAIN";

/// Where a connection is in authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// Authenticated, or no token is required.
    Open,
    /// Must authenticate with this token; `handshaken` once PLAIN was
    /// chosen.
    Required {
        /// The token the password must match.
        token: Token,
        /// SaslHandshake named PLAIN.
        handshaken: bool,
    },
}

impl Session {
    /// A new connection's state for the current `--token`.
    #[must_use]
    pub fn new(token: Option<&Token>) -> Self {
        token.map_or(Self::Open, |t| Self::Required {
            token: t.clone(),
            handshaken: false,
        })
    }

    /// Whether a request of API `key` may be served now.
    #[must_use]
    pub fn allows(&self, key: ApiKey) -> bool {
        matches!(self, Self::Open)
            || matches!(
                key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
    }

    /// Answers SaslHandshake: PLAIN is the only mechanism.
    pub fn handshake(&mut self, req: &SaslHandshakeRequest) -> SaslHandshakeResponse {
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = vec![StrBytes::from_static_str(PLAIN)];
        if req.mechanism.as_str() == PLAIN {
            if let Self::Required { handshaken, .. } = self {
                *handshaken = true;
            }
        } else {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
        }
        resp
    }

    /// Answers SaslAuthenticate; `false` when the connection must close.
    pub fn authenticate(
        &mut self,
        req: &SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, bool) {
        let resp = SaslAuthenticateResponse::default();
        let fail = |mut resp: SaslAuthenticateResponse, why: &str| {
            resp.error_code = ResponseError::SaslAuthenticationFailed.code();
            resp.error_message = Some(StrBytes::from_string(why.to_owned()));
            (resp, false)
        };
        match self {
            Self::Open => (resp, true),
            Self::Required {
                handshaken: false, ..
            } => fail(resp, "SaslHandshake (mechanism PLAIN) must come first"),
            Self::Required { token, .. } => match password(&req.auth_bytes) {
                Some(p) if token.matches(p) => {
                    *self = Self::Open;
                    (resp, true)
                }
                Some(_) => fail(
                    resp,
                    "authentication failed: the password must be the server's --token",
                ),
                None => fail(resp, "malformed SASL/PLAIN message"),
            },
        }
    }
}

/// The password of a SASL/PLAIN message (`authzid \0 user \0 password`).
fn password(msg: &[u8]) -> Option<&[u8]> {
    let mut parts = msg.splitn(3, |b| *b == 0);
    let (_authzid, _user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    Some(pass)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn auth(bytes: &'static [u8]) -> SaslAuthenticateRequest {
        let mut r = SaslAuthenticateRequest::default();
        r.auth_bytes = Bytes::from_static(bytes);
        r
    }

    fn handshake(m: &'static str) -> SaslHandshakeRequest {
        let mut r = SaslHandshakeRequest::default();
        r.mechanism = StrBytes::from_static_str(m);
        r
    }

    #[test]
    fn the_token_is_the_password() {
        let token = Token::parse("s3cret").unwrap();
        let mut s = Session::new(Some(&token));
        assert!(!s.allows(ApiKey::Metadata) && s.allows(ApiKey::ApiVersions));
        assert!(!s.authenticate(&auth(b"\0u\0s3cret")).1, "handshake first");
        let mut s = Session::new(Some(&token));
        assert_ne!(s.handshake(&handshake("SCRAM-SHA-256")).error_code, 0);
        assert_eq!(s.handshake(&handshake("PLAIN")).error_code, 0);
        let (r, ok) = s.clone().authenticate(&auth(b"\0u\0wrong"));
        assert!(!ok && r.error_code == ResponseError::SaslAuthenticationFailed.code());
        assert!(!s.clone().authenticate(&auth(b"no separators")).1);
        assert!(s.authenticate(&auth(b"\0anyone\0s3cret")).1);
        assert!(s.allows(ApiKey::Metadata));
        assert!(Session::new(None).allows(ApiKey::Produce));
    }
}
