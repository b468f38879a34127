//! Where Redis is: the URL's forms (one server, Sentinel, Cluster; each
//! with or without TLS), and the clients of the `redis` crate built from
//! them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates,
};

use tokio::sync::Mutex;

use crate::{within, RedisConfig, RedisError};

/// How the URL reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One server (or a replica set's master at a fixed address).
    Single,
    /// Sentinels that name the master of `master`.
    Sentinel { master: String },
    /// A Redis Cluster, reached through any of its nodes.
    Cluster,
}

/// A parsed URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) mode: Mode,
    pub(crate) tls: bool,
    /// `(host, port)` of the server, the sentinels or the cluster's seed nodes.
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
}

impl Target {
    /// The URL as it may be printed: without credentials.
    pub(crate) fn shown(&self) -> String {
        let scheme = match (&self.mode, self.tls) {
            (Mode::Single, false) => "redis",
            (Mode::Single, true) => "rediss",
            (Mode::Sentinel { .. }, false) => "redis+sentinel",
            (Mode::Sentinel { .. }, true) => "rediss+sentinel",
            (Mode::Cluster, false) => "redis+cluster",
            (Mode::Cluster, true) => "rediss+cluster",
        };
        let hosts: Vec<String> = self.hosts.iter().map(|(h, p)| host_port(h, *p)).collect();
        match &self.mode {
            Mode::Sentinel { master } => format!("{scheme}://{}/{master}", hosts.join(",")),
            _ => format!("{scheme}://{}", hosts.join(",")),
        }
    }

    fn redis_info(&self) -> RedisConnectionInfo {
        let mut info = RedisConnectionInfo::default();
        if let Some(user) = &self.user {
            info = info.set_username(user);
        }
        if let Some(password) = &self.password {
            info = info.set_password(password);
        }
        info
    }

    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        }
    }

    fn info(&self, host: &str, port: u16) -> redis::RedisResult<ConnectionInfo> {
        Ok(self.addr(host, port).into_connection_info()?.set_redis_settings(self.redis_info()).set_tcp_settings(tcp()))
    }
}

/// Small writes leave at once: a pipelined batch must not wait for the
/// acknowledgement of the previous one (Nagle's algorithm held each batch
/// 40 ms).
fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `redis://`, `rediss://`, `redis+sentinel://`, `rediss+sentinel://`,
/// `redis+cluster://` and `rediss+cluster://` URLs.
pub(crate) fn parse_url(url: &str) -> Result<Target, RedisError> {
    let bad = || RedisError::Url(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (tls, kind) = match scheme {
        "redis" => (false, ""),
        "rediss" => (true, ""),
        "redis+sentinel" => (false, "sentinel"),
        "rediss+sentinel" => (true, "sentinel"),
        "redis+cluster" => (false, "cluster"),
        "rediss+cluster" => (true, "cluster"),
        _ => return Err(bad()),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let hosts = hosts.split(',').map(|h| parse_host(h).ok_or_else(bad)).collect::<Result<Vec<_>, _>>()?;
    let mode = match kind {
        "sentinel" => {
            // the master's name, then an optional database number
            let master = path.split(['/', '?']).next().unwrap_or("");
            if master.is_empty() {
                return Err(bad());
            }
            Mode::Sentinel { master: percent_decode(master) }
        }
        "cluster" => Mode::Cluster,
        _ if hosts.len() > 1 => return Err(bad()),
        _ => Mode::Single,
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => ((!user.is_empty()).then(|| percent_decode(user)), Some(percent_decode(pass))),
            None => (None, Some(percent_decode(u))),
        },
    };
    Ok(Target { mode, tls, hosts, user, password })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (6379 by default).
fn parse_host(h: &str) -> Option<(String, u16)> {
    if let Some(v6) = h.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 6379,
            None => return None,
        };
        return (!host.is_empty()).then(|| (host.to_owned(), port));
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, p)) => (host, p.parse().ok()?),
        None => (h, 6379),
    };
    (!host.is_empty() && !host.contains(':')).then(|| (host.to_owned(), port))
}

/// Decodes `%XX` escapes (a password may hold `@`, `:` or `/`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The certificates a TLS connection trusts and shows, read from the files
/// the config names. `None` without TLS.
pub(crate) fn certificates(config: &RedisConfig, target: &Target) -> Result<Option<TlsCertificates>, RedisError> {
    let any_file = config.ca_file.is_some() || config.cert_file.is_some() || config.key_file.is_some();
    if !target.tls {
        return if any_file { Err(RedisError::TlsFiles("TLS files need a rediss:// URL".into())) } else { Ok(None) };
    }
    // the provider of the rustls that redis uses; a process may have
    // installed another already, which is as good
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |what: &str, path: &Path, marker: &str| -> Result<Vec<u8>, RedisError> {
        let data = std::fs::read(path)
            .map_err(|e| RedisError::TlsFiles(format!("cannot read the {what} {}: {}", path.display(), reason(&e))))?;
        if !String::from_utf8_lossy(&data).contains(marker) {
            return Err(RedisError::TlsFiles(format!("the {what} {} holds no PEM {}", path.display(), marker)));
        }
        Ok(data)
    };
    let root_cert = config.ca_file.as_deref().map(|p| read("CA file", p, "CERTIFICATE")).transpose()?;
    let client_tls = match (&config.cert_file, &config.key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("certificate file", cert, "CERTIFICATE")?,
            client_key: read("key file", key, "PRIVATE KEY")?,
        }),
        _ => return Err(RedisError::TlsFiles("a client certificate needs its key, and a key its certificate".into())),
    };
    Ok(Some(TlsCertificates { client_tls, root_cert }))
}

/// An I/O error as people read it: `connection refused`, without the
/// operating system's error number.
pub(crate) fn reason(e: &std::io::Error) -> String {
    words(&e.to_string())
}

/// An error's text as people read it: without the system's error number,
/// nor the `redis` crate's kind (`Password authentication failed -
/// AuthenticationFailed` reads `password authentication failed`), starting
/// in lower case when it is a sentence of the system's or the crate's.
pub(crate) fn words(text: &str) -> String {
    let lower = |s: &str| {
        let mut chars = s.chars();
        chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
    };
    // "description - Kind" or "description - Kind: detail"
    if let Some((desc, rest)) = text.split_once(" - ") {
        let (kind, detail) = rest.split_once(": ").map_or((rest, None), |(k, d)| (k, Some(d)));
        if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return match detail {
                Some(d) => format!("{}: {}", lower(desc), words(d)),
                None => lower(desc),
            };
        }
    }
    match text.rfind(" (os error ") {
        Some(at) => lower(&text[..at]),
        None => text.to_owned(),
    }
}

/// The sentinels of a master.
pub(crate) struct Sentinels {
    client: Mutex<SentinelClient>,
    master: String,
    /// A connection to a sentinel, kept to ask where the master is.
    asking: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Sentinels {
    /// Where the sentinels say the master is now.
    pub(crate) async fn master_addr(&self, limit: Duration) -> Result<(String, u16), String> {
        let mut asking = self.asking.lock().await;
        if asking.is_none() {
            let client = within(limit, "asking the sentinels", async {
                self.client.lock().await.async_get_sentinel_client().await
            })
            .await?;
            *asking = Some(within(limit, "connecting to a sentinel", client.get_multiplexed_async_connection()).await?);
        }
        let Some(conn) = asking.as_mut() else { return Err("no sentinel".into()) };
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master);
        let answer = within(limit, "SENTINEL GET-MASTER-ADDR-BY-NAME", ask.query_async::<(String, u16)>(conn)).await;
        if answer.is_err() {
            *asking = None;
        }
        answer
    }
}

/// The host and port a client connects to.
pub(crate) fn client_addr(client: &redis::Client) -> Option<(String, u16)> {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    }
}

/// What a node connects with: a client per mode, made once.
#[derive(Clone)]
pub(crate) enum Connector {
    Single(redis::Client),
    Sentinel(Arc<Sentinels>),
    Cluster { target: Target, certs: Option<TlsCertificates> },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Single(_) => "Connector::Single",
            Connector::Sentinel(_) => "Connector::Sentinel",
            Connector::Cluster { .. } => "Connector::Cluster",
        })
    }
}

impl Connector {
    pub(crate) fn new(target: &Target, certs: Option<TlsCertificates>) -> redis::RedisResult<Connector> {
        match &target.mode {
            Mode::Single => {
                let (host, port) = &target.hosts[0];
                let info = target.info(host, *port)?;
                Ok(Connector::Single(match certs {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                }))
            }
            Mode::Sentinel { master } => {
                let sentinels = target.hosts.iter().map(|(h, p)| target.addr(h, *p));
                let mut b = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
                    .set_client_to_redis_tcp_settings(tcp())
                    .set_client_to_sentinel_tcp_settings(tcp());
                if let Some(user) = &target.user {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(password) = &target.password {
                    b = b.set_client_to_redis_password(password);
                }
                if target.tls {
                    b = b
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    if let Some(certs) = certs {
                        b = b
                            .set_client_to_redis_certificates(certs.clone())
                            .set_client_to_sentinel_certificates(certs);
                    }
                }
                Ok(Connector::Sentinel(Arc::new(Sentinels {
                    client: Mutex::new(b.build()?),
                    master: master.clone(),
                    asking: Mutex::new(None),
                })))
            }
            Mode::Cluster => Ok(Connector::Cluster { target: target.clone(), certs }),
        }
    }

    /// The client of the server to use now: for Sentinel, the master the
    /// sentinels name now (checked with `ROLE`).
    pub(crate) async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Connector::Single(c) => Ok(c.clone()),
            Connector::Sentinel(s) => s.client.lock().await.async_get_client().await,
            Connector::Cluster { .. } => {
                Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "a cluster has no single client")))
            }
        }
    }

    /// A cluster client (RESP3, so that it can subscribe), delivering
    /// pushes to `push` when given. Requests are not retried: what fails
    /// fails at once, and the connection is made again.
    pub(crate) fn cluster(
        &self,
        timeout: Duration,
        push: Option<impl redis::aio::AsyncPushSender>,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let Connector::Cluster { target, certs } = self else {
            return Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not a cluster")));
        };
        let nodes = target.hosts.iter().map(|(h, p)| target.info(h, *p)).collect::<redis::RedisResult<Vec<_>>>()?;
        let mut b = ClusterClientBuilder::new(nodes)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .tcp_settings(tcp())
            .retries(0);
        if let Some(user) = &target.user {
            b = b.username(user);
        }
        if let Some(password) = &target.password {
            b = b.password(password);
        }
        if target.tls {
            b = b.tls(redis::TlsMode::Secure);
            if let Some(certs) = certs {
                b = b.certs(certs.clone());
            }
        }
        if let Some(push) = push {
            b = b.push_sender(push);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(t: &Target) -> (Option<&str>, Option<&str>) {
        (t.user.as_deref(), t.password.as_deref())
    }

    #[test]
    fn urls_give_addresses_and_credentials() {
        let t = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!((t.hosts.clone(), t.mode.clone(), t.tls), (vec![("127.0.0.1".into(), 6379)], Mode::Single, false));
        assert_eq!(t.shown(), "redis://127.0.0.1:6379");
        let t = parse_url("redis://:secret@localhost:7000/2").unwrap();
        assert_eq!((t.shown().as_str(), auth(&t)), ("redis://localhost:7000", (None, Some("secret"))));
        let t = parse_url("redis://app:pw@h:1").unwrap();
        assert_eq!(auth(&t), (Some("app"), Some("pw")));
        let t = parse_url("redis://u%40x:p%2Fw%3Ad@h:1").unwrap();
        assert_eq!(auth(&t), (Some("u@x"), Some("p/w:d")));
        assert_eq!(parse_url("redis://[::1]").unwrap().shown(), "redis://[::1]:6379");
        assert_eq!(parse_url("redis://[::1]:7000").unwrap().hosts, [("::1".into(), 7000)]);
        let t = parse_url("rediss://:pw@redis.example:6380").unwrap();
        assert_eq!((t.tls, t.shown().as_str()), (true, "rediss://redis.example:6380"));
        let t = parse_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster").unwrap();
        assert_eq!(t.mode, Mode::Sentinel { master: "mymaster".into() });
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.shown(), "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster");
        assert_eq!(parse_url("rediss+sentinel://s:26379/m/0").unwrap().shown(), "rediss+sentinel://s:26379/m");
        let t = parse_url("redis+cluster://a:7000,b:7001").unwrap();
        assert_eq!((t.mode, t.hosts.len()), (Mode::Cluster, 2));
        for bad in [
            "http://h",
            "redis://",
            "redis:/h",
            "redis://h:notaport",
            "redis://h:1,h:2",
            "redis+sentinel://h:26379",
            "redis+sentinel://h:26379/",
            "redis+cluster://a:1,,b:2",
            "redis://[::1",
        ] {
            assert!(matches!(parse_url(bad), Err(RedisError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn system_errors_read_as_words() {
        assert_eq!(words("Connection refused (os error 111)"), "connection refused");
        assert_eq!(words("WRONGPASS invalid password"), "WRONGPASS invalid password");
        assert_eq!(words("Password authentication failed - AuthenticationFailed"), "password authentication failed");
        assert_eq!(words("Invalid - Io: Connection reset (os error 104)"), "invalid: connection reset");
    }
}
