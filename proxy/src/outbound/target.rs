//! Which service an outbound request is for. On a connection the app addressed to the
//! proxy: the authority of an absolute-form URI (the app uses us as an HTTP proxy) or of an
//! HTTP/2 request, else the `Host` header; reduced to the key the proxy subscribes with
//! (`api:80` → `api`; an IP:port stays as it is), remembered per app connection. On a
//! connection iptables redirected: the address it was going to, whatever the requests
//! name (their `Host` is left alone).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;
use http::{HeaderValue, Request, header};
use parking_lot::Mutex;

use crate::proxy_error::ProxyError;

/// How the requests of one app connection name their service.
pub enum ConnectionTarget {
    /// Each request names it.
    Named(LastHost),
    /// The connection was redirected: every request goes where it was going.
    Intercepted {
        key: Arc<str>,
        destination: Authority,
    },
}

impl ConnectionTarget {
    pub fn named() -> Self {
        Self::Named(LastHost::default())
    }

    /// A redirected connection's target, from the address it was going to.
    pub fn intercepted(destination: SocketAddr) -> Self {
        let text = destination.to_string();
        Self::Intercepted {
            destination: Authority::try_from(text.as_str())
                .expect("a socket address is a valid authority"),
            key: text.into(),
        }
    }

    /// The authority `request` goes to (for its `Host` or `:authority`) and the key of the
    /// service it is for.
    pub fn of<B>(&self, request: &Request<B>) -> Result<(Authority, Arc<str>), ProxyError> {
        match self {
            Self::Named(last_host) => last_host.named(request),
            Self::Intercepted { key, destination } => {
                let authority =
                    requested_authority(request).unwrap_or_else(|_| destination.clone());
                Ok((authority, key.clone()))
            }
        }
    }
}

/// What the last request on one app connection named by its `Host`: an app's connection
/// nearly always names one service, so the next request with the same `Host` skips
/// parsing it into an authority and a key again.
#[derive(Default)]
pub struct LastHost(Mutex<Option<(HeaderValue, Authority, Arc<str>)>>);

impl LastHost {
    /// The authority `request` addressed and its subscription key.
    pub fn named<B>(&self, request: &Request<B>) -> Result<(Authority, Arc<str>), ProxyError> {
        let host = match request.uri().authority() {
            Some(_) => None,
            None => request.headers().get(header::HOST),
        };
        if let Some(host) = host
            && let Some((seen, authority, key)) = &*self.0.lock()
            && seen == host
        {
            return Ok((authority.clone(), key.clone()));
        }
        let authority = requested_authority(request)?;
        let key: Arc<str> = service_key(&authority).into();
        if let Some(host) = host {
            *self.0.lock() = Some((host.clone(), authority.clone(), key.clone()));
        }
        Ok((authority, key))
    }
}

/// The authority the app addressed.
pub fn requested_authority<B>(request: &Request<B>) -> Result<Authority, ProxyError> {
    if let Some(authority) = request.uri().authority() {
        return Ok(authority.clone());
    }
    let host = request
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::NoAuthority)?;
    let text = host
        .to_str()
        .map_err(|_| ProxyError::BadAuthority(String::from_utf8_lossy(host.as_bytes()).into()))?;
    text.parse()
        .map_err(|_| ProxyError::BadAuthority(text.to_owned()))
}

/// The subscription key for an authority; borrowed when the host is a name already in
/// its key form (the common case: no copy per request).
pub fn service_key(authority: &Authority) -> Cow<'_, str> {
    let host = authority.host();
    // A name starts with a letter; an address with a digit or `[`.
    if !host.starts_with(|c: char| c.is_ascii_alphabetic())
        && let Ok(address) = authority.as_str().parse::<SocketAddr>()
    {
        return Cow::Owned(address.to_string());
    }
    let name = host.trim_end_matches('.');
    if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_target_from_uri_or_host() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("/", Some("api"), "api"),
            ("/x", Some("API:8080"), "api"),
            ("/x", Some("api.:80"), "api"),
            ("http://api/x", Some("ignored"), "api"),
            ("http://api:80/x", None, "api"),
            ("/", Some("127.0.0.1:8080"), "127.0.0.1:8080"),
            ("/", Some("[::1]:8080"), "[::1]:8080"),
        ];
        for (uri, host, expected) in cases {
            let mut request = Request::get(*uri);
            if let Some(host) = host {
                request = request.header(header::HOST, *host);
            }
            let request = request.body(()).unwrap();
            let authority = requested_authority(&request).unwrap();
            assert_eq!(service_key(&authority), *expected, "{uri} {host:?}");
        }
        let last = LastHost::default();
        for (host, expected) in [
            ("api", "api"),
            ("api", "api"),
            ("API:81", "api"),
            ("db", "db"),
        ] {
            let request = Request::get("/")
                .header(header::HOST, host)
                .body(())
                .unwrap();
            let (authority, key) = last.named(&request).unwrap();
            assert_eq!((authority.as_str(), &*key), (host, expected));
        }
        let absolute = Request::get("http://web:8080/").body(()).unwrap();
        let (authority, key) = last.named(&absolute).unwrap();
        assert_eq!((authority.as_str(), &*key), ("web:8080", "web"));
        let no_host = Request::get("/").body(()).unwrap();
        assert!(matches!(
            requested_authority(&no_host),
            Err(ProxyError::NoAuthority)
        ));
        let bad = Request::get("/")
            .header(header::HOST, "a b")
            .body(())
            .unwrap();
        assert!(matches!(
            requested_authority(&bad),
            Err(ProxyError::BadAuthority(_))
        ));
    }
}

#[cfg(test)]
mod intercepted_tests {
    use super::*;

    #[test]
    fn a_redirected_connection_goes_where_it_was_going_whatever_the_host() {
        let target = ConnectionTarget::intercepted("10.0.0.7:8080".parse().unwrap());
        let with_host = Request::get("/")
            .header(header::HOST, "api.example")
            .body(())
            .unwrap();
        let (authority, key) = target.of(&with_host).unwrap();
        assert_eq!(
            (authority.as_str(), &*key),
            ("api.example", "10.0.0.7:8080")
        );
        let without_host = Request::get("/").body(()).unwrap();
        let (authority, key) = target.of(&without_host).unwrap();
        assert_eq!(
            (authority.as_str(), &*key),
            ("10.0.0.7:8080", "10.0.0.7:8080")
        );
        let v6 = ConnectionTarget::intercepted("[fd77::2]:80".parse().unwrap());
        assert_eq!(&*v6.of(&without_host).unwrap().1, "[fd77::2]:80");
    }
}
